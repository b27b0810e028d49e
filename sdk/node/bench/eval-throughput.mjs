// Local evaluation throughput on one core: MD5 bucketing alone (the bound), then the client's
// evaluations of a plain, a salted and an internal-list flag, and record(). No service needed:
// the client starts offline from a bootstrap file. Flags at 50% unless named otherwise.
//
//   npm run build --prefix sdk/node && node sdk/node/bench/eval-throughput.mjs [seconds per case]
import { createHash, hash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { Client, bucket, sha256Hex } from "../dist/index.js";

const SECONDS = Number(process.argv[2] ?? 2);
const USERS = Array.from({ length: 4096 }, (_, i) => `user-${i}@example.com`);
const MASK = USERS.length - 1;

function measure(name, evaluate) {
  // Warm up the JIT, then count evaluations for SECONDS.
  let sink = 0;
  for (let i = 0; i < 200_000; i++) sink += evaluate(USERS[i & MASK]) ? 1 : 0;
  let done = 0;
  const start = process.hrtime.bigint();
  const limit = start + BigInt(Math.round(SECONDS * 1e9));
  let now = start;
  while (now < limit) {
    for (let i = 0; i < 50_000; i++) sink += evaluate(USERS[(done + i) & MASK]) ? 1 : 0;
    done += 50_000;
    now = process.hrtime.bigint();
  }
  const perSecond = done / (Number(now - start) / 1e9);
  console.log(`${name.padEnd(50)} ${(perSecond / 1e6).toFixed(2).padStart(6)} M/s`);
  if (sink < 0) throw new Error("unreachable: keeps the results live");
  return perSecond;
}

const flag = (name, extra) => ({ name, version: 1, status: "running", stage: "50%", percent: 50, salt: null, internal_users_sha256: [], ...extra });
const staff = Array.from({ length: 50 }, (_, i) => sha256Hex(`staff-${i}@corp`));
const dir = mkdtempSync(join(tmpdir(), "rollout-bench-"));
const bootstrapFile = join(dir, "flags.json");
writeFileSync(
  bootstrapFile,
  JSON.stringify({
    flags: [
      flag("plain"),
      flag("salted", { salt: "checkout" }),
      flag("internal", { stage: "internal", percent: 0, internal_users_sha256: staff }),
      flag("internal-10", { stage: "10%", percent: 10, internal_users_sha256: staff }),
      flag("completed", { status: "completed", stage: "100%", percent: 100 }),
    ],
  }),
);
// An unreachable service: the client serves the bootstrap file; its reconnection attempts are rare and cheap.
const client = await Client.create("http://127.0.0.1:9", { bootstrapFile, reconnectBaseMs: 60_000, logger: { warn() {} } });

console.log(`node ${process.version}, ${SECONDS} s per case, ${USERS.length} distinct user ids`);
measure("MD5 alone, createHash (the runbook's code)", (u) => createHash("md5").update(u).digest().readUInt32BE(0) % 100 < 50);
measure("MD5 alone, the SDK's bucket()", (u) => bucket(u) < 50);
measure("SHA-256 alone, crypto.hash", (u) => hash("sha256", u, "binary").length > 0);
measure('isEnabled("plain", user), 50%', (u) => client.isEnabled("plain", u));
measure('isEnabled("salted", user), 50%', (u) => client.isEnabled("salted", u));
measure('isEnabled("internal", user), 0% + 50 users', (u) => client.isEnabled("internal", u));
measure('isEnabled("internal-10", user), 10% + 50 users', (u) => client.isEnabled("internal-10", u));
measure('isEnabled("completed", user), 100%', (u) => client.isEnabled("completed", u));
measure('evaluation("plain", user) (with its reason)', (u) => client.evaluation("plain", u).enabled);
measure('record("plain", user, {latencyMs})', (u) => (client.record("plain", u, { latencyMs: 3 }), true));

await client.close();
rmSync(dir, { recursive: true });
