// Reconnection delays: doubling, in the upper half of their ceiling, capped, jittered.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff } from "../../dist/backoff.js";

test("delays double, stay in the upper half and never pass the cap", () => {
  for (const random of [() => 0, () => 0.999_999, Math.random]) {
    const backoff = new Backoff(250, 30_000, random);
    for (let attempt = 0; attempt < 100; attempt++) {
      const ceiling = Math.min(250 * 2 ** attempt, 30_000);
      assert.equal(backoff.ceiling(), ceiling, `attempt ${attempt}`);
      const delay = backoff.nextDelay();
      assert.ok(delay >= ceiling / 2 && delay <= ceiling, `attempt ${attempt}: ${delay}`);
    }
    backoff.reset();
    const first = backoff.nextDelay();
    assert.ok(first >= 125 && first <= 250, `after a reset: ${first}`);
  }
  const delays = [];
  const backoff = new Backoff(250, 30_000, () => 0);
  for (let i = 0; i < 10; i++) delays.push(backoff.nextDelay());
  assert.deepEqual(delays, [125, 250, 500, 1000, 2000, 4000, 8000, 15_000, 15_000, 15_000]);
});

test("delays are jittered, not constant", () => {
  const backoff = new Backoff(1000, 1000);
  const delays = new Set(Array.from({ length: 50 }, () => backoff.nextDelay()));
  assert.ok(delays.size > 40, `only ${delays.size} distinct delays in 50`);
});
