// Report aggregation: per flag and cohort, the p99, the bounds, the outbox's merge and expiry.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Histogram, MAX_COUNTER, Outbox, Tallies, sampleBody } from "../../dist/report.js";

const find = (samples, flag, cohort) => samples.find((s) => s.flag === flag && s.cohort === cohort);

test("outcomes are counted per flag and cohort and start over after a take", () => {
  const tallies = new Tallies(10);
  for (let i = 0; i < 100; i++) tallies.record("a", "treatment", { error: i % 10 === 0 });
  for (let i = 0; i < 30; i++) tallies.record("a", "control", { error: true });
  tallies.record("b", "control", {});
  const samples = tallies.take();
  assert.equal(samples.length, 3, "no sample for a cohort without outcomes");
  assert.deepEqual(find(samples, "a", "treatment"), {
    flag: "a",
    cohort: "treatment",
    requests: 100,
    errors: 10,
    p99LatencyMs: null,
  });
  assert.deepEqual([find(samples, "a", "control").requests, find(samples, "a", "control").errors], [30, 30]);
  assert.equal(find(samples, "b", "control").requests, 1);
  assert.deepEqual(tallies.take(), []);
});

test("the p99 is within two percent of the exact one, and unusable latencies still count their request", () => {
  const tallies = new Tallies(10);
  // 1..=1000 ms: the nearest-rank p99 is 990 ms.
  for (let ms = 1; ms <= 1000; ms++) tallies.record("a", "treatment", { latencyMs: ms });
  for (const bad of [Number.NaN, -1, Number.POSITIVE_INFINITY, "12"]) tallies.record("a", "treatment", { latencyMs: bad });
  const [a] = tallies.take();
  assert.equal(a.requests, 1004);
  assert.ok(Math.abs(a.p99LatencyMs - 990) / 990 <= 0.02, `p99 ${a.p99LatencyMs}`);
});

test("extreme latencies are clamped, not lost", () => {
  const h = new Histogram();
  h.add(0);
  h.add(1e15);
  const p99 = h.p99();
  assert.ok(Number.isFinite(p99) && p99 > 1e6 && p99 < 1e12, `${p99}`);
  assert.equal(new Histogram().p99(), null);
});

test("flags past the bound are dropped and counted", () => {
  const tallies = new Tallies(2);
  for (const flag of ["a", "b", "c", "d"]) {
    tallies.record(flag, "treatment", {});
    tallies.record(flag, "control", {});
  }
  tallies.record("a", "treatment", {});
  assert.equal(tallies.dropped, 4);
  assert.equal(tallies.take().reduce((sum, s) => sum + s.requests, 0), 5);
});

test("the body is what the metrics route takes", () => {
  const sample = { flag: "f", cohort: "control", requests: 3, errors: 1, p99LatencyMs: null };
  assert.deepEqual(sampleBody(sample), { requests: 3, errors: 1, cohort: "control" });
  assert.deepEqual(sampleBody({ ...sample, cohort: "treatment", p99LatencyMs: 12.5 }), {
    requests: 3,
    errors: 1,
    p99_latency_ms: 12.5,
    cohort: "treatment",
  });
});

test("waiting samples merge, and expire after the max age", () => {
  const outbox = new Outbox(60_000);
  const sample = (requests, p99) => ({ flag: "f", cohort: "treatment", requests, errors: 1, p99LatencyMs: p99 });
  assert.equal(outbox.add([sample(10, 5)], 0), 0);
  assert.equal(outbox.add([sample(5, 9), sample(1, null)], 5_000), 0);
  const waiting = outbox.drain();
  assert.equal(waiting.length, 1);
  const [{ sample: merged, since }] = waiting;
  assert.deepEqual([merged.requests, merged.errors, merged.p99LatencyMs, since], [16, 3, 9, 0]);
  assert.equal(outbox.retry(merged, since, 59_000), 0, "kept while young");
  const [again] = outbox.drain();
  assert.equal(outbox.retry(again.sample, again.since, 60_000), 16, "dropped at the max age");
  assert.deepEqual(outbox.drain(), []);
});

test("counts past the per-push limit are reported as overflow", () => {
  const outbox = new Outbox(60_000);
  const big = { flag: "f", cohort: "control", requests: MAX_COUNTER, errors: 0, p99LatencyMs: null };
  assert.equal(outbox.add([big, { ...big, requests: 7 }], 0), 7);
  assert.equal(outbox.drain()[0].sample.requests, MAX_COUNTER);
});
