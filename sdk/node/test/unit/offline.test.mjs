// The client with no service to talk to: defaults, the bootstrap file, bad options, and
// background work that never keeps a process alive. A closed port on 127.0.0.1 stands for an
// unreachable service.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";

import { Client, SdkError, sha256Hex } from "../../dist/index.js";

const quiet = { warn() {} };
let dir;
let unreachable;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "rollout-sdk-test-"));
  // A port that was free a moment ago: connections to it are refused.
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  unreachable = `http://127.0.0.1:${server.address().port}`;
  await new Promise((resolve) => server.close(resolve));
});

after(() => rmSync(dir, { recursive: true, force: true }));

function bootstrap(flags) {
  const path = join(dir, `flags-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(path, JSON.stringify({ flags }));
  return path;
}

const flag = (name, extra = {}) => ({
  name,
  version: 3,
  status: "running",
  stage: "100%",
  percent: 100,
  salt: null,
  internal_users_sha256: [],
  ...extra,
});

test("with no configuration, answers are the per-call default, else the client's, after initTimeoutMs", async () => {
  const start = performance.now();
  const client = await Client.create(unreachable, { initTimeoutMs: 300, defaultValue: true, logger: quiet });
  const waited = performance.now() - start;
  assert.ok(waited >= 290 && waited < 3_000, `create waited ${waited} ms`);
  assert.deepEqual([client.isReady(), client.isConnected()], [false, false]);
  assert.equal(client.isEnabled("any", "user-1"), true);
  assert.equal(client.isEnabled("any", "user-1", false), false);
  assert.deepEqual(client.evaluation("any", "user-1"), { enabled: true, reason: "default", version: null });
  await client.close();
  const off = await Client.create(unreachable, { initTimeoutMs: 50, logger: quiet });
  assert.equal(off.isEnabled("any", "user-1"), false, "false unless set");
  await off.close();
});

test("a bootstrap file is served at once, offline", async () => {
  const bootstrapFile = bootstrap([flag("all"), flag("staff", { percent: 0, internal_users_sha256: [sha256Hex("ann@corp")] })]);
  const start = performance.now();
  const client = await Client.create(unreachable, { bootstrapFile, initTimeoutMs: 10_000, logger: quiet });
  assert.ok(performance.now() - start < 2_000, "create does not wait for the network");
  assert.equal(client.isReady(), true);
  assert.equal(client.isEnabled("all", "anyone"), true);
  assert.deepEqual(client.evaluation("staff", "ann@corp"), { enabled: true, reason: "internal_user", version: 3 });
  assert.equal(client.isEnabled("staff", "bob@corp"), false);
  await client.close();
});

test("bad options and bootstrap files reject create with a coded SdkError", async () => {
  const cases = [
    [["not a url"], "invalid_url"],
    [["ftp://host"], "invalid_url"],
    [[unreachable, { initTimeoutMs: -1 }], "invalid_option"],
    [[unreachable, { reportIntervalMs: Number.NaN }], "invalid_option"],
    [[unreachable, { bootstrapFile: join(dir, "missing.json") }], "bootstrap_read"],
    [[unreachable, { bootstrapFile: bootstrap("nope") }], "bootstrap_format"],
  ];
  writeFileSync(join(dir, "bad.json"), "{not json");
  cases.push([[unreachable, { bootstrapFile: join(dir, "bad.json") }], "bootstrap_format"]);
  for (const [args, code] of cases) {
    await assert.rejects(
      Client.create(args[0], { logger: quiet, ...args[1] }),
      (e) => e instanceof SdkError && e.code === code,
      `${JSON.stringify(args)} → ${code}`,
    );
  }
});

test("background work never keeps a process alive: a script that forgets close() still exits", async () => {
  const bootstrapFile = bootstrap([flag("all")]);
  const script = `
    import { Client } from ${JSON.stringify(new URL("../../dist/index.js", import.meta.url).href)};
    const client = await Client.create(${JSON.stringify(unreachable)}, { bootstrapFile: ${JSON.stringify(bootstrapFile)}, logger: { warn() {} } });
    client.record("all", "user-1", { error: false, latencyMs: 3 });
    console.log(client.isEnabled("all", "user-1"));
  `;
  const start = performance.now();
  const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], { timeout: 10_000 });
  assert.equal(stdout.trim(), "true");
  // The report timer (5 s) and the reconnection delays would hold it for seconds if they were ref'd.
  assert.ok(performance.now() - start < 4_000, `the script took ${performance.now() - start} ms to exit`);
});
