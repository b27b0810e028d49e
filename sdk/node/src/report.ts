// Outcome reporting by cohort: what `Client.record` aggregates in memory (per flag and cohort,
// bounded) and the samples the background timer pushes to `POST /flags/{flag}/metrics`.
// No I/O here; the pushing lives in `client`.

/** Which group of users an outcome belongs to: `treatment` when the flag enabled the user, else `control`. */
export type Cohort = "treatment" | "control";

/** What happened when the app served one request. */
export interface Outcome {
  readonly error?: boolean | undefined;
  /** Ignored unless finite and non-negative. */
  readonly latencyMs?: number | undefined;
}

/** Largest counter the service accepts in one push. */
export const MAX_COUNTER = 1_000_000_000;

/** One push: the body of `POST /flags/{flag}/metrics`, and the flag it goes to. */
export interface Sample {
  readonly flag: string;
  readonly cohort: Cohort;
  requests: number;
  errors: number;
  p99LatencyMs: number | null;
}

/** The JSON body the metrics route takes. */
export function sampleBody(sample: Sample): Record<string, unknown> {
  const body: Record<string, unknown> = { requests: sample.requests, errors: sample.errors };
  if (sample.p99LatencyMs !== null) body.p99_latency_ms = sample.p99LatencyMs;
  body.cohort = sample.cohort;
  return body;
}

const HIST_MIN_MS = 0.01;
const HIST_RATIO = 1.04;
const LN_RATIO = Math.log(HIST_RATIO);
/** 0.01 ms · 1.04^530 ≈ 10^7 ms: anything slower lands in the last bucket. */
const HIST_BUCKETS = 530;

/** Latencies in logarithmic buckets (ratio 1.04 from 0.01 ms): a p99 within 2% in 2 KB. */
export class Histogram {
  private readonly counts = new Uint32Array(HIST_BUCKETS);
  private total = 0;

  add(ms: number): void {
    const position = ms <= HIST_MIN_MS ? 0 : Math.log(ms / HIST_MIN_MS) / LN_RATIO;
    const index = Math.min(Math.floor(position), HIST_BUCKETS - 1);
    // Uint32Array wraps; stop at its top instead.
    if (this.counts[index]! < 0xffffffff) this.counts[index]! += 1;
    this.total += 1;
  }

  /** Nearest-rank p99, as the geometric middle of its bucket; `null` without latencies. */
  p99(): number | null {
    if (this.total === 0) return null;
    const rank = this.total - Math.floor(this.total / 100);
    let seen = 0;
    for (let i = 0; i < HIST_BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return HIST_MIN_MS * HIST_RATIO ** (i + 0.5);
    }
    return null;
  }
}

class Tally {
  requests = 0;
  errors = 0;
  latencies: Histogram | null = null;

  add(outcome: Outcome): void {
    this.requests += 1;
    if (outcome.error === true) this.errors += 1;
    const ms = outcome.latencyMs;
    if (typeof ms === "number" && Number.isFinite(ms) && ms >= 0) (this.latencies ??= new Histogram()).add(ms);
  }
}

/** The outcomes recorded since the last push, per flag and cohort, for at most `maxFlags` flags. */
export class Tallies {
  private live = new Map<string, { treatment: Tally; control: Tally }>();
  private droppedCount = 0;

  constructor(private readonly maxFlags: number) {}

  /** Counts one outcome; a flag past `maxFlags` is dropped (and counted), never an allocation spree. */
  record(flag: string, cohort: Cohort, outcome: Outcome): void {
    let tallies = this.live.get(flag);
    if (tallies === undefined) {
      if (this.live.size >= this.maxFlags) {
        this.droppedCount += 1;
        return;
      }
      tallies = { treatment: new Tally(), control: new Tally() };
      this.live.set(flag, tallies);
    }
    tallies[cohort].add(outcome);
  }

  /** Everything recorded since the last call, as samples to push; the tallies start over. */
  take(): Sample[] {
    const live = this.live;
    this.live = new Map();
    const samples: Sample[] = [];
    for (const [flag, tallies] of live) {
      for (const cohort of ["treatment", "control"] as const) {
        const tally = tallies[cohort];
        if (tally.requests > 0) {
          samples.push({
            flag,
            cohort,
            requests: tally.requests,
            errors: tally.errors,
            p99LatencyMs: tally.latencies?.p99() ?? null,
          });
        }
      }
    }
    return samples;
  }

  countDropped(outcomes: number): void {
    this.droppedCount += outcomes;
  }

  /** How many recorded outcomes were discarded (too many flags, service unreachable too long, or refused). */
  get dropped(): number {
    return this.droppedCount;
  }
}

interface Waiting {
  sample: Sample;
  /** When it first waited (ms, the caller's clock). */
  since: number;
}

/** Samples that could not be pushed yet, merged per flag and cohort, kept for at most `maxAgeMs`. */
export class Outbox {
  private waiting = new Map<string, Waiting>();

  constructor(private readonly maxAgeMs: number) {}

  /**
   * Adds fresh samples, merged into any waiting one of the same flag and cohort (counts add, the
   * p99 is the larger: the conservative figure for a guard). Returns the outcomes that did not
   * fit under the service's per-push counter limit.
   */
  add(samples: readonly Sample[], now: number): number {
    let overflow = 0;
    for (const sample of samples) {
      const key = `${sample.cohort}:${sample.flag}`;
      let entry = this.waiting.get(key);
      if (entry === undefined) {
        entry = { sample: { flag: sample.flag, cohort: sample.cohort, requests: 0, errors: 0, p99LatencyMs: null }, since: now };
        this.waiting.set(key, entry);
      }
      const waiting = entry.sample;
      const requests = waiting.requests + sample.requests;
      overflow += Math.max(0, requests - MAX_COUNTER);
      waiting.requests = Math.min(requests, MAX_COUNTER);
      waiting.errors = Math.min(waiting.errors + sample.errors, waiting.requests);
      waiting.p99LatencyMs =
        waiting.p99LatencyMs !== null && sample.p99LatencyMs !== null
          ? Math.max(waiting.p99LatencyMs, sample.p99LatencyMs)
          : (waiting.p99LatencyMs ?? sample.p99LatencyMs);
    }
    return overflow;
  }

  /** Everything waiting, with when it first waited; the outbox is left empty. */
  drain(): Waiting[] {
    const all = [...this.waiting.values()];
    this.waiting.clear();
    return all;
  }

  /**
   * Puts back a sample whose push failed, unless it has waited past `maxAgeMs`: then its outcomes
   * are returned to be counted as dropped.
   */
  retry(sample: Sample, since: number, now: number): number {
    if (now - since >= this.maxAgeMs) return sample.requests;
    this.waiting.set(`${sample.cohort}:${sample.flag}`, { sample, since });
    return 0;
  }
}
