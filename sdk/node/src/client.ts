// The client: creation, local evaluation over the current snapshot, the background loop that
// keeps the snapshot current (`GET /stream`, `GET /flags/config` as the fallback) and the timer
// that pushes outcome reports.

import { readFile } from "node:fs/promises";
import type { IncomingMessage } from "node:http";

import { Backoff } from "./backoff.js";
import {
  EMPTY_SNAPSHOT,
  type FlagConfig,
  type Snapshot,
  parseChange,
  parseConfigBody,
  snapshotFromBody,
  withChange,
} from "./config.js";
import { openOwnConnection } from "./connection.js";
import { type Evaluation, enabledFor, evaluate } from "./eval.js";
import { type Cohort, type Outcome, Outbox, type Sample, Tallies, sampleBody } from "./report.js";
import { type SseEvent, SseParser } from "./sse.js";

const USER_AGENT = "rollout-sdk-node/0.1.0";

/** Where the client's messages go; `info` and `debug` are optional. */
export interface Logger {
  warn(message: string): void;
  info?(message: string): void;
  debug?(message: string): void;
}

/** Options of a {@link Client}; every one has a default. */
export interface ClientOptions {
  /** Bearer token for reading the configuration (a read or admin token, when the service has read tokens). */
  token?: string | undefined;
  /** Bearer token for pushing reports (a metrics or admin token); the read token when unset. */
  metricsToken?: string | undefined;
  /** What an unknown flag answers, and every flag before any configuration arrives (default `false`). */
  defaultValue?: boolean | undefined;
  /** A file holding a `GET /flags/config` body, served until the service answers: works offline, `create` does not wait. */
  bootstrapFile?: string | undefined;
  /** How long `create` waits for the first configuration from the service (default 5,000 ms). */
  initTimeoutMs?: number | undefined;
  /** Bound on each configuration fetch, report push and stream opening (default 10,000 ms). */
  requestTimeoutMs?: number | undefined;
  /** A stream silent this long is reconnected (default 40,000 ms; the service sends a heartbeat every 15 s). */
  streamIdleTimeoutMs?: number | undefined;
  /** First reconnection delay (default 250 ms), doubling, jittered, up to `reconnectMaxMs`. */
  reconnectBaseMs?: number | undefined;
  /** Longest reconnection delay (default 30,000 ms). */
  reconnectMaxMs?: number | undefined;
  /** How often recorded outcomes are pushed (default 5,000 ms). */
  reportIntervalMs?: number | undefined;
  /** Reports the service could not take for this long are dropped and counted (default 60,000 ms). */
  reportMaxAgeMs?: number | undefined;
  /** Most flags with outcomes held between two pushes; outcomes of further flags are dropped (default 1,000). */
  maxReportFlags?: number | undefined;
  /** Where warnings go (default: `console.warn`, prefixed `[rollout-sdk]`). */
  logger?: Logger | undefined;
}

/** Why a client could not be created. Network trouble is never one: the client starts anyway. */
export class SdkError extends Error {
  override readonly name = "SdkError";
  constructor(
    readonly code: "invalid_url" | "invalid_option" | "bootstrap_read" | "bootstrap_format",
    message: string,
    options?: { cause: unknown },
  ) {
    super(message, options);
  }
}

const DEFAULT_LOGGER: Logger = { warn: (message) => console.warn(`[rollout-sdk] ${message}`) };

interface Settings {
  readonly token: string | null;
  readonly metricsToken: string | null;
  readonly defaultValue: boolean;
  readonly initTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly streamIdleTimeoutMs: number;
  readonly reconnectBaseMs: number;
  readonly reconnectMaxMs: number;
  readonly reportIntervalMs: number;
  readonly reportMaxAgeMs: number;
  readonly maxReportFlags: number;
  readonly logger: Logger;
}

function settings(options: ClientOptions): Settings {
  const duration = (name: keyof ClientOptions, value: number | undefined, fallback: number): number => {
    if (value === undefined) return fallback;
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
      throw new SdkError("invalid_option", `${name} must be a finite number of milliseconds, not ${String(value)}`);
    }
    return value;
  };
  const maxReportFlags = options.maxReportFlags ?? 1_000;
  if (!Number.isSafeInteger(maxReportFlags) || maxReportFlags < 0) {
    throw new SdkError("invalid_option", `maxReportFlags must be a non-negative integer, not ${String(maxReportFlags)}`);
  }
  return {
    token: options.token ?? null,
    metricsToken: options.metricsToken ?? null,
    defaultValue: options.defaultValue ?? false,
    initTimeoutMs: duration("initTimeoutMs", options.initTimeoutMs, 5_000),
    requestTimeoutMs: duration("requestTimeoutMs", options.requestTimeoutMs, 10_000),
    streamIdleTimeoutMs: duration("streamIdleTimeoutMs", options.streamIdleTimeoutMs, 40_000),
    reconnectBaseMs: Math.max(1, duration("reconnectBaseMs", options.reconnectBaseMs, 250)),
    reconnectMaxMs: duration("reconnectMaxMs", options.reconnectMaxMs, 30_000),
    reportIntervalMs: Math.max(1, duration("reportIntervalMs", options.reportIntervalMs, 5_000)),
    reportMaxAgeMs: duration("reportMaxAgeMs", options.reportMaxAgeMs, 60_000),
    maxReportFlags,
    logger: options.logger ?? DEFAULT_LOGGER,
  };
}

function parseBase(url: string): URL {
  let base: URL;
  try {
    base = new URL(url);
  } catch (cause) {
    throw new SdkError("invalid_url", `invalid service URL ${JSON.stringify(url)}: not a URL`, { cause });
  }
  if (base.protocol !== "http:" && base.protocol !== "https:") {
    throw new SdkError("invalid_url", `invalid service URL ${JSON.stringify(url)}: the scheme must be http or https`);
  }
  return base;
}

/** `base` with `segments` appended as percent-encoded path segments (a base path is kept). */
export function endpoint(base: URL, segments: readonly string[]): URL {
  const url = new URL(base.href);
  url.pathname = `${url.pathname.replace(/\/$/, "")}/${segments.map(encodeURIComponent).join("/")}`;
  url.search = "";
  url.hash = "";
  return url;
}

async function readBootstrap(path: string) {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (cause) {
    throw new SdkError("bootstrap_read", `cannot read the bootstrap file ${path}`, { cause });
  }
  try {
    return parseConfigBody(JSON.parse(text));
  } catch (cause) {
    throw new SdkError(
      "bootstrap_format",
      `the bootstrap file ${path} is not a flag configuration (the body of GET /flags/config)`,
      { cause },
    );
  }
}

/**
 * Resolves after `ms`, or at once when `signal` aborts. A background wait (`keepAlive` false)
 * never keeps the process alive; the wait of `create` does, since its caller awaits it.
 */
function sleep(ms: number, signal: AbortSignal, keepAlive = false): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    if (!keepAlive) timer.unref();
    signal.addEventListener("abort", done, { once: true });
  });
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? `: ${error.cause.message}` : "";
    return `${error.message}${cause}`;
  }
  return String(error);
}

/** Why a connection or a fetch ended. */
class SyncFailure {
  constructor(
    readonly kind: "http" | "timeout" | "status" | "not_event_stream" | "idle" | "ended" | "framing" | "decode",
    readonly message: string,
  ) {}
}

/**
 * A flag client. Evaluation is local and synchronous: it never waits on the network.
 *
 * ```ts
 * const client = await Client.create("http://rollout:8080", { token: "read-token" });
 * if (client.isEnabled("customerio", userId)) { ... }
 * ```
 */
export class Client {
  private snapshot: Snapshot = EMPTY_SNAPSHOT;
  private connected = false;
  private closing: Promise<void> | null = null;
  private readonly stop = new AbortController();
  private readonly tallies: Tallies;
  private readonly outbox: Outbox;
  private readonly configUrl: URL;
  private readonly streamUrl: URL;
  private readonly ready: Promise<void>;
  private markReady: () => void = () => {};
  private isReadyFlag = false;
  private etag: string | null = null;
  private sync: Promise<void> = Promise.resolve();
  private reportTimer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> | null = null;

  private constructor(
    private readonly base: URL,
    private readonly settings: Settings,
  ) {
    this.tallies = new Tallies(settings.maxReportFlags);
    this.outbox = new Outbox(settings.reportMaxAgeMs);
    this.configUrl = endpoint(base, ["flags", "config"]);
    this.streamUrl = endpoint(base, ["stream"]);
    this.ready = new Promise((resolve) => {
      this.markReady = resolve;
    });
  }

  /**
   * Starts a client of the service at `url` (e.g. `http://rollout:8080`); resolves once a
   * configuration is in hand (the bootstrap file's at once, else the service's) or
   * `initTimeoutMs` has passed. Rejects only on bad options or an unreadable bootstrap file.
   */
  static async create(url: string, options: ClientOptions = {}): Promise<Client> {
    const client = new Client(parseBase(url), settings(options));
    if (options.bootstrapFile !== undefined) client.replace(snapshotFromBody(await readBootstrap(options.bootstrapFile)));
    // The loop handles its own failures; this only keeps a bug in it from becoming an unhandled rejection.
    client.sync = client.syncLoop().catch((error: unknown) => {
      client.connected = false;
      client.settings.logger.warn(`the flag sync loop stopped: ${describe(error)}; serving the last configuration`);
    });
    const timer = setInterval(() => void client.flushOnce(), client.settings.reportIntervalMs);
    timer.unref();
    client.reportTimer = timer;
    if (!client.isReadyFlag) {
      const waited = new AbortController();
      await Promise.race([client.ready, sleep(client.settings.initTimeoutMs, waited.signal, true)]);
      waited.abort();
      if (!client.isReadyFlag) {
        client.settings.logger.warn(
          `no flag configuration within ${client.settings.initTimeoutMs} ms: answering defaults until it arrives`,
        );
      }
    }
    return client;
  }

  /** Whether `flag` is on for `userId`; an unknown flag answers `fallback`, else the client's default. */
  isEnabled(flag: string, userId: string, fallback?: boolean): boolean {
    const compiled = this.snapshot.get(flag);
    if (compiled === undefined || typeof userId !== "string") return fallback ?? this.settings.defaultValue;
    return enabledFor(compiled, userId);
  }

  /** The answer with its reason and the flag version it came from. */
  evaluation(flag: string, userId: string, fallback?: boolean): Evaluation {
    return evaluate(this.snapshot, flag, userId, fallback ?? this.settings.defaultValue);
  }

  /** A flag's configuration as last received, if known. */
  flag(flag: string): FlagConfig | undefined {
    return this.snapshot.get(flag)?.config;
  }

  /** Whether any configuration is in hand (bootstrap file or service). */
  isReady(): boolean {
    return this.isReadyFlag;
  }

  /** Whether the change stream is open right now (the last known configuration is served either way). */
  isConnected(): boolean {
    return this.connected;
  }

  /**
   * Counts an outcome for `flag` in the user's cohort (treatment when the flag enables them now,
   * control otherwise). Never waits on the network; pushed in the background.
   */
  record(flag: string, userId: string, outcome: Outcome = {}): void {
    if (this.closing !== null || typeof flag !== "string") {
      this.tallies.countDropped(1);
      return;
    }
    const cohort: Cohort = this.isEnabled(flag, userId) ? "treatment" : "control";
    this.tallies.record(flag, cohort, outcome);
  }

  /**
   * How many recorded outcomes were discarded: past `maxReportFlags`, refused by the service
   * (e.g. an unknown flag), undeliverable for longer than `reportMaxAgeMs`, or recorded after `close`.
   */
  droppedReports(): number {
    return this.tallies.dropped;
  }

  /**
   * Stops the stream and the report timer after one last push of the recorded outcomes (what
   * still cannot go is dropped and counted). Evaluation keeps answering from the last
   * configuration. Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stop.abort();
      if (this.reportTimer !== null) clearInterval(this.reportTimer);
      await this.sync;
      this.connected = false;
      await this.flushing;
      await this.flush();
      const left = this.outbox.drain().reduce((sum, w) => sum + w.sample.requests, 0);
      this.tallies.countDropped(left);
    })();
    return this.closing;
  }

  private replace(snapshot: Snapshot): void {
    this.snapshot = snapshot;
    if (!this.isReadyFlag) {
      this.isReadyFlag = true;
      this.markReady();
    }
  }

  private get closed(): boolean {
    return this.stop.signal.aborted;
  }

  /**
   * Aborts a request after `requestTimeoutMs`, or when the client closes (`onClose`; the last
   * report push of `close` is not cut short). `AbortSignal.any` would do, from node 20.3 only.
   */
  private requestSignal(onClose = true): AbortSignal {
    const timeout = AbortSignal.timeout(this.settings.requestTimeoutMs);
    if (!onClose) return timeout;
    const either = new AbortController();
    const abort = () => either.abort();
    timeout.addEventListener("abort", abort, { once: true });
    if (this.stop.signal.aborted) abort();
    else this.stop.signal.addEventListener("abort", abort, { once: true });
    either.signal.addEventListener("abort", () => this.stop.signal.removeEventListener("abort", abort), { once: true });
    return either.signal;
  }

  private headers(token: string | null, extra: Record<string, string>): Record<string, string> {
    const headers: Record<string, string> = { "user-agent": USER_AGENT, ...extra };
    if (token !== null) headers.authorization = `Bearer ${token}`;
    return headers;
  }

  /** Stream; when the stream cannot be had, fetch `/flags/config` instead; back off; again. */
  private async syncLoop(): Promise<void> {
    const { logger, reconnectBaseMs, reconnectMaxMs } = this.settings;
    const backoff = new Backoff(reconnectBaseMs, reconnectMaxMs);
    const state = { lastEventId: null as string | null, delivered: false };
    let down = false;
    while (!this.closed) {
      state.delivered = false;
      const ended = await this.streamOnce(state);
      this.connected = false;
      if (this.closed) return;
      // An event we could not apply: replaying after it would skip it; resynchronize.
      if (ended.kind === "decode") state.lastEventId = null;
      if (state.delivered) {
        backoff.reset();
        down = false;
        logger.info?.(`flag stream disconnected (${ended.message}); reconnecting`);
      } else {
        // Warn once per outage; the retries that follow are debug.
        const log = down ? logger.debug?.bind(logger) : logger.warn.bind(logger);
        down = true;
        log?.(`flag stream unavailable (${ended.message}); fetching the configuration instead`);
        try {
          // The stream resumes from a fresh snapshot rather than replaying older changes over it.
          if (await this.fetchConfig()) state.lastEventId = null;
        } catch (error) {
          if (this.closed) return;
          logger.debug?.(`cannot fetch the flag configuration (${describe(error)}); serving the last known`);
        }
      }
      await sleep(backoff.nextDelay(), this.stop.signal);
    }
  }

  /** One stream connection, until it ends; `state.delivered` tells whether the service sent anything. */
  private async streamOnce(state: { lastEventId: string | null; delivered: boolean }): Promise<SyncFailure> {
    const { requestTimeoutMs, streamIdleTimeoutMs } = this.settings;
    const connection = new AbortController();
    let why: SyncFailure | null = null;
    const fail = (failure: SyncFailure) => {
      why ??= failure;
      connection.abort();
    };
    const onStop = () => connection.abort();
    this.stop.signal.addEventListener("abort", onStop, { once: true });
    const openTimer = setTimeout(() => fail(new SyncFailure("timeout", `no answer within ${requestTimeoutMs} ms`)), requestTimeoutMs);
    openTimer.unref();
    const idleTimer = setTimeout(
      () => fail(new SyncFailure("idle", `the stream was silent for ${streamIdleTimeoutMs} ms`)),
      streamIdleTimeoutMs,
    );
    idleTimer.unref();
    let response: IncomingMessage | undefined;
    try {
      const extra: Record<string, string> = { accept: "text/event-stream", "cache-control": "no-cache" };
      if (state.lastEventId !== null) extra["last-event-id"] = state.lastEventId;
      try {
        response = await openOwnConnection(this.streamUrl, this.headers(this.settings.token, extra), connection.signal);
      } catch (error) {
        return why ?? new SyncFailure("http", `request failed: ${describe(error)}`);
      }
      // Its errors reach the reads below; this keeps one after them from going unhandled.
      response.on("error", () => {});
      clearTimeout(openTimer);
      const status = response.statusCode ?? 0;
      if (status < 200 || status > 299) {
        return new SyncFailure("status", `the service answered ${status}`);
      }
      if (!(response.headers["content-type"] ?? "").startsWith("text/event-stream")) {
        return new SyncFailure("not_event_stream", "the answer is not an event stream");
      }
      this.connected = true;
      idleTimer.refresh();
      const parser = new SseParser();
      const chunks: AsyncIterator<Uint8Array> = response[Symbol.asyncIterator]();
      for (;;) {
        const chunk = await chunks.next().catch((error: unknown) => new Error(describe(error)));
        if (chunk instanceof Error) return why ?? new SyncFailure("http", `the stream broke: ${describe(chunk)}`);
        if (chunk.done === true) return new SyncFailure("ended", "the stream ended");
        idleTimer.refresh();
        state.delivered = true;
        let events: SseEvent[];
        try {
          events = parser.push(chunk.value);
        } catch (error) {
          return new SyncFailure("framing", `bad event-stream framing: ${describe(error)}`);
        }
        for (const event of events) {
          const failure = this.apply(event);
          if (failure !== null) return failure;
          // An empty `id:` resets the last id (per the event-stream spec): nothing to send back.
          if (event.id !== null) state.lastEventId = event.id === "" ? null : event.id;
        }
      }
    } finally {
      clearTimeout(openTimer);
      clearTimeout(idleTimer);
      this.stop.signal.removeEventListener("abort", onStop);
      // Closes the stream's connection, whether left mid-way (a decode error, a framing error),
      // refused, or ended.
      response?.destroy();
      connection.abort();
    }
  }

  private apply(event: SseEvent): SyncFailure | null {
    try {
      if (event.event === "snapshot") {
        this.replace(snapshotFromBody(parseConfigBody(JSON.parse(event.data))));
      } else if (event.event === "change") {
        this.replace(withChange(this.snapshot, parseChange(event.data)));
      }
      // Event types this client does not know are left for newer clients.
      return null;
    } catch (error) {
      return new SyncFailure("decode", `undecodable ${event.event} event: ${describe(error)}`);
    }
  }

  /** `GET /flags/config` with the last ETag; `true` when a new configuration was applied. */
  private async fetchConfig(): Promise<boolean> {
    const extra: Record<string, string> = { accept: "application/json" };
    if (this.etag !== null) extra["if-none-match"] = this.etag;
    const response = await fetch(this.configUrl, {
      headers: this.headers(this.settings.token, extra),
      signal: this.requestSignal(),
    });
    if (response.status === 304) {
      await response.body?.cancel().catch(() => {});
      return false;
    }
    if (!response.ok) {
      await response.body?.cancel().catch(() => {});
      throw new Error(`the service answered ${response.status}`);
    }
    const body = parseConfigBody(await response.json());
    this.replace(snapshotFromBody(body));
    this.etag = response.headers.get("etag");
    return true;
  }

  /** One push round at a time: a tick that finds one running waits for it instead. */
  private flushOnce(): Promise<void> {
    this.flushing ??= this.flush()
      .catch((error: unknown) => this.settings.logger.warn(`report push round failed: ${describe(error)}`))
      .finally(() => {
        this.flushing = null;
      });
    return this.flushing;
  }

  private async flush(): Promise<void> {
    const now = performance.now();
    this.tallies.countDropped(this.outbox.add(this.tallies.take(), now));
    let unreachable = false;
    for (const { sample, since } of this.outbox.drain()) {
      if (unreachable) {
        this.tallies.countDropped(this.outbox.retry(sample, since, now));
        continue;
      }
      const result = await this.push(sample);
      if (result === "refused") {
        this.tallies.countDropped(sample.requests);
      } else if (result === "retry") {
        // One failure says the service is unreachable: the rest wait for the next round.
        unreachable = true;
        this.tallies.countDropped(this.outbox.retry(sample, since, now));
      }
    }
  }

  private async push(sample: Sample): Promise<"ok" | "refused" | "retry"> {
    let status: number;
    try {
      const response = await fetch(endpoint(this.base, ["flags", sample.flag, "metrics"]), {
        method: "POST",
        headers: this.headers(this.settings.metricsToken ?? this.settings.token, { "content-type": "application/json" }),
        body: JSON.stringify(sampleBody(sample)),
        signal: this.requestSignal(false),
      });
      status = response.status;
      await response.arrayBuffer().catch(() => {});
    } catch (error) {
      this.settings.logger.debug?.(`report push failed: ${describe(error)}`);
      return "retry";
    }
    if (status >= 200 && status < 300) return "ok";
    if (status === 408 || status === 429 || status >= 500 || status < 400) return "retry";
    // Refused (an unknown flag, a bad token): sending it again cannot help.
    this.settings.logger.warn(`the service refused a report for flag ${JSON.stringify(sample.flag)} (${status}); dropped`);
    return "refused";
  }
}
