// The SDK keeps answering while the service is down and while Redis is down, and converges once
// they are back. Run by tests/api/sdk_node.rs with two real service processes (ROLLOUT_URL, the
// one the SDK follows, and ROLLOUT_OTHER_URL) on one persistent Redis, flag f at 50%; it kills,
// restarts and stops them when this test asks (`step`).
import assert from "node:assert/strict";
import { test } from "node:test";

import { Client } from "../../dist/index.js";
import {
  TOKEN,
  URL_,
  admin,
  caughtUp,
  eventually,
  keptLogger,
  mismatches,
  serviceAnswers,
  step,
  tryAdmin,
  users,
} from "./harness.mjs";

const OTHER = process.env.ROLLOUT_OTHER_URL;
const ALL = users(2_000);

function answers(client) {
  return ALL.map((u) => client.isEnabled("f", u));
}

test("answers survive a service restart and a Redis outage, then converge", async () => {
  const logger = keptLogger();
  const client = await Client.create(URL_, { token: TOKEN, reconnectBaseMs: 50, reconnectMaxMs: 500, logger });
  try {
    await caughtUp(client, "f");
    const before = answers(client);
    assert.ok(before.filter(Boolean).length > 800, "half the users are in");

    // The service dies: the SDK notices and serves the last configuration.
    await step("kill-service");
    await eventually(10_000, "the SDK notices the stream is gone", () => !client.isConnected());
    assert.deepEqual(answers(client), before, "the last configuration is served while disconnected");
    // A rollback through the other replica while this one is down: the SDK cannot know yet.
    const rolledBack = await admin("POST", "/flags/f/rollback", {}, OTHER);
    assert.equal(rolledBack.status, 200, JSON.stringify(rolledBack.body));
    const failedAttempts = () => logger.lines.filter((l) => l.includes("flag stream unavailable")).length;
    const seen = failedAttempts();
    await eventually(10_000, "two more failed reconnections after the rollback", () => failedAttempts() >= seen + 2);
    assert.deepEqual(answers(client), before, "still the last configuration, through several failed reconnections");
    assert.equal(logger.lines.filter((l) => l.startsWith("warn")).length, 1, `one warning per outage:\n${logger.lines.join("\n")}`);

    // The service comes back on the same address: the SDK reconnects and converges.
    await step("restart-service");
    const reconnected = await eventually(15_000, "the SDK reconnects and takes the rollback", () =>
      client.isConnected() && client.flag("f")?.status === "rolled_back",
    );
    console.log(`FIGURES node SDK: reconnected with the current configuration ${reconnected.toFixed(0)} ms after the restarted service was ready`);
    assert.deepEqual(answers(client).filter(Boolean), []);

    // Redis stops: the service serves from its snapshot, the stream stays, the SDK keeps answering.
    const resumed = await admin("POST", "/flags/f/resume", {});
    assert.equal(resumed.status, 200, JSON.stringify(resumed.body));
    await caughtUp(client, "f");
    const running = answers(client);
    await step("stop-redis");
    await eventually(15_000, "the service reports Redis gone", async () => (await tryAdmin("GET", "/readyz")).status === 503);
    const refused = await tryAdmin("POST", "/flags/f/rollback", {});
    assert.equal(refused.status, 503, "changes are refused while Redis is down");
    assert.deepEqual(answers(client), running, "answers unchanged while Redis is down");
    assert.equal(client.isConnected(), true, "the stream does not depend on Redis");

    // Redis comes back: a change is taken again, and reaches the SDK.
    await step("start-redis");
    await eventually(20_000, "the service takes changes again", async () => (await tryAdmin("POST", "/flags/f/pause", {})).status === 200, 100);
    await caughtUp(client, "f");
    assert.equal(client.flag("f").status, "paused");
    const reply = await serviceAnswers("f", ALL);
    assert.deepEqual(mismatches(client, "f", ALL, reply.enabled), [], "converged with the service");
  } catch (error) {
    console.log(logger.lines.join("\n"));
    throw error;
  } finally {
    await client.close();
  }
});
