// Outcomes recorded through the SDK land in the flag's window by cohort; refused reports are
// dropped and counted. Run by tests/api/sdk_node.rs, which created flag f at 10%.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Client } from "../../dist/index.js";
import { TOKEN, URL_, admin, caughtUp, eventually, keptLogger, users } from "./harness.mjs";

test("10,000 outcomes reach the flag's sample ratio as treatment and control", async () => {
  const logger = keptLogger();
  const client = await Client.create(URL_, { token: TOKEN, reportIntervalMs: 100, logger });
  await caughtUp(client, "f");
  const all = users(10_000);
  const treatment = all.filter((u) => client.isEnabled("f", u)).length;
  assert.ok(treatment > 800 && treatment < 1200, `${treatment} users at 10%`);
  const start = performance.now();
  for (const [i, user] of all.entries()) client.record("f", user, { error: i % 100 === 0, latencyMs: 12 });
  const perRecord = ((performance.now() - start) * 1000) / all.length;
  console.log(`FIGURES node SDK: record() ${perRecord.toFixed(2)} µs per call (never waits on the network)`);
  // An unknown flag: the service refuses its reports (404); they are dropped and counted.
  for (let i = 0; i < 7; i++) client.record("no-such-flag", `user-${i}`, {});
  await client.close();
  assert.equal(client.droppedReports(), 7, logger.lines.join("\n"));
  assert.ok(logger.lines.some((l) => l.includes("no-such-flag") && l.includes("404")), logger.lines.join("\n"));

  let health;
  await eventually(5_000, "both cohorts' reports land", async () => {
    health = (await admin("GET", "/flags/f/health")).body;
    return health.sample_ratio !== undefined && health.sample_ratio !== null;
  });
  const ratio = health.sample_ratio;
  assert.equal(ratio.treatment_requests, treatment, JSON.stringify(health));
  assert.equal(ratio.control_requests, all.length - treatment, JSON.stringify(health));
  assert.equal(ratio.mismatch, false, "a correctly wired app serves its share");
});

test("records after close are dropped and counted, never sent", async () => {
  const client = await Client.create(URL_, { token: TOKEN, reportIntervalMs: 50 });
  await client.close();
  client.record("f", "user-1", {});
  assert.equal(client.droppedReports(), 1);
});
