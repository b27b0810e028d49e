// When the stream cannot be opened (here the service's only stream slot is taken: 503), the SDK
// serves the configuration from GET /flags/config, follows changes by polling it at its backoff,
// and moves to the stream once it can. Run by tests/api/sdk_node.rs: max 1 stream client, flag f at 50%.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Client } from "../../dist/index.js";
import { TOKEN, URL_, admin, caughtUp, eventually, keptLogger, mismatches, serviceAnswers, users } from "./harness.mjs";

test("refused streams fall back to the configuration route, then the stream takes over", async () => {
  const holder = new AbortController();
  const held = await fetch(`${URL_}/stream`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: holder.signal });
  assert.equal(held.status, 200);
  const refused = await fetch(`${URL_}/stream`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(refused.status, 503, "the only stream slot is taken");
  await refused.body?.cancel();

  const logger = keptLogger();
  const client = await Client.create(URL_, { token: TOKEN, reconnectBaseMs: 20, reconnectMaxMs: 100, logger });
  try {
    assert.equal(client.isReady(), true, "the configuration route answered");
    assert.equal(client.isConnected(), false, "no stream");
    await caughtUp(client, "f");
    const all = users(2_000);
    assert.deepEqual(mismatches(client, "f", all, (await serviceAnswers("f", all)).enabled), []);

    assert.equal((await admin("POST", "/flags/f/rollback", {})).status, 200);
    await caughtUp(client, "f");
    assert.equal(client.evaluation("f", all[0]).reason, "flag_off");
    assert.equal(client.isConnected(), false, "still polling");
    assert.ok(logger.lines.some((l) => l.startsWith("warn") && l.includes("503")), logger.lines.join("\n"));

    holder.abort();
    await eventually(10_000, "the SDK opens the stream once a slot is free", () => client.isConnected());
    assert.equal((await admin("POST", "/flags/f/resume", {})).status, 200);
    await caughtUp(client, "f");
    assert.deepEqual(mismatches(client, "f", all, (await serviceAnswers("f", all)).enabled), []);
  } finally {
    holder.abort();
    await client.close();
  }
});
