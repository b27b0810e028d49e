// The SDK's local answers equal the service's for 10,000 users in every state, and a rollback
// made through the service reaches it over the stream. Run by tests/api/sdk_node.rs, which
// created: internal (running, internal users), salted (10%, salt, an internal user),
// half (50%), gone (rolled back), waiting (pending).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client } from "../../dist/index.js";
import { TOKEN, URL_, admin, caughtUp, mismatches, serviceAnswers, users } from "./harness.mjs";

const FLAGS = ["internal", "salted", "half", "gone", "waiting"];
const USERS = [...users(10_000), "ann@corp", "bob@corp"];
let client;

before(async () => {
  client = await Client.create(URL_, { token: TOKEN });
  assert.equal(client.isReady(), true, "create resolves once the configuration is in");
  assert.equal(client.isConnected(), true);
  for (const flag of FLAGS) await caughtUp(client, flag);
});

after(() => client?.close());

for (const flag of FLAGS) {
  test(`${flag}: 0 mismatches with the service's batch route on ${USERS.length} users`, async () => {
    const reply = await serviceAnswers(flag, USERS);
    assert.equal(client.flag(flag).version, reply.version, "the same version on both sides");
    const wrong = mismatches(client, flag, USERS, reply.enabled);
    console.log(`FIGURES node SDK vs service, flag ${flag}: ${USERS.length} users, ${wrong.length} mismatches`);
    assert.deepEqual(wrong, []);
    const enabled = reply.enabled.filter(Boolean).length;
    const expected = { internal: [2, 2], salted: [800, 1200], half: [4500, 5500], gone: [0, 0], waiting: [0, 0] }[flag];
    assert.ok(enabled >= expected[0] && enabled <= expected[1], `${enabled} enabled users is the state's share`);
  });
}

test("reasons and versions equal the single-user route's", async () => {
  for (const [flag, user] of [
    ["salted", "ann@corp"],
    ["salted", "user-1@example.com"],
    ["internal", "bob@corp"],
    ["internal", "user-2@example.com"],
    ["gone", "ann@corp"],
    ["half", "user-3@example.com"],
  ]) {
    const { body } = await admin("GET", `/flags/${flag}/users/${encodeURIComponent(user)}`);
    const local = client.evaluation(flag, user);
    assert.deepEqual([local.enabled, local.reason], [body.enabled, body.reason], `${flag} ${user}`);
    assert.equal(local.version, client.flag(flag).version);
  }
});

test("an unknown flag answers the per-call default, else the client's", () => {
  assert.equal(client.isEnabled("no-such-flag", "ann@corp"), false);
  assert.equal(client.isEnabled("no-such-flag", "ann@corp", true), true);
  assert.deepEqual(client.evaluation("no-such-flag", "ann@corp", true), { enabled: true, reason: "default", version: null });
});

test("a rollback through the service reaches the SDK over the stream", async () => {
  const inRollout = USERS.filter((u) => client.isEnabled("half", u));
  assert.ok(inRollout.length > 4000);
  const start = performance.now();
  const reply = await admin("POST", "/flags/half/rollback", { reason: "node SDK test" });
  assert.equal(reply.status, 200, JSON.stringify(reply.body));
  // Polled every millisecond: the figure is from the rollback request's start to the SDK answering false.
  while (client.isEnabled("half", inRollout[0])) {
    assert.ok(performance.now() - start < 5_000, "the rollback did not reach the SDK within 5 s");
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  const ms = performance.now() - start;
  console.log(`FIGURES node SDK: rollback request start to the SDK answering false: ${ms.toFixed(1)} ms (one replica, loopback)`);
  assert.equal(client.evaluation("half", inRollout[0]).reason, "flag_off");
  assert.deepEqual(USERS.filter((u) => client.isEnabled("half", u)), []);
  assert.equal(client.isConnected(), true);
});
