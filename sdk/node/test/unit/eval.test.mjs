// Bucketing and the evaluation rules, against the repository's vectors (what the runbook's
// Node function answers) and the service's rules in docs/clients.md.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { compileFlag, parseChange, parseConfigBody, sha256Hex, snapshotFromBody } from "../../dist/config.js";
import { bucket, enabledFor, evaluate, userBucket } from "../../dist/eval.js";

const vectors = JSON.parse(readFileSync(new URL("../../../../tests/vectors/buckets.json", import.meta.url), "utf8"));

/** The runbook's own hashing, the reference every answer must equal. */
function runbookBucket(key) {
  return createHash("md5").update(key).digest().readUInt32BE(0) % 100;
}

function flag(name, status, percent, salt = null, internal = []) {
  return { name, version: 7, status, stage: "stage", percent, salt, internal_users_sha256: internal.map(sha256Hex) };
}

const snapshot = (...flags) => snapshotFromBody({ flags });

test("buckets agree with the committed vectors, non-ASCII ids included", () => {
  assert.ok(vectors.length >= 10_000, `only ${vectors.length} vectors`);
  assert.ok(vectors.filter(([id]) => /[^\x00-\x7f]/.test(id)).length > 1000, "non-ASCII ids must be covered");
  for (const [id, expected] of vectors) {
    assert.equal(userBucket(null, id), expected, `user id ${JSON.stringify(id)}`);
    assert.equal(bucket(id), runbookBucket(id));
  }
});

test("a salted bucket hashes salt:user", () => {
  for (const user of ["user-1", "alice@example.com", "日本語", ""]) {
    assert.equal(userBucket("s1", user), runbookBucket(`s1:${user}`));
  }
  let moved = 0;
  for (let i = 0; i < 1000; i++) moved += userBucket("s1", `user-${i}`) !== userBucket(null, `user-${i}`) ? 1 : 0;
  assert.ok(moved > 900, `a salt must reshuffle the buckets (${moved})`);
});

test("percent selects exactly the users below it, with its reason and version", () => {
  const snap = snapshot(flag("f", "running", 30));
  for (let i = 0; i < 10_000; i++) {
    const user = `user-${i}`;
    const e = evaluate(snap, "f", user, false);
    assert.equal(e.enabled, runbookBucket(user) < 30, user);
    assert.equal(e.reason, e.enabled ? "in_rollout" : "not_in_rollout");
    assert.equal(e.version, 7);
    assert.equal(enabledFor(snap.get("f"), user), e.enabled);
  }
});

test("zero percent is nobody and a hundred everybody", () => {
  const snap = snapshot(flag("none", "running", 0), flag("all", "completed", 100));
  for (let i = 0; i < 2000; i++) {
    assert.equal(evaluate(snap, "none", `u${i}`, true).enabled, false);
    assert.equal(evaluate(snap, "all", `u${i}`, false).enabled, true);
  }
});

test("salted flags use the salted bucket", () => {
  const snap = snapshot(flag("f", "running", 50, "s1"));
  let differs = 0;
  for (let i = 0; i < 10_000; i++) {
    const user = `user-${i}`;
    const enabled = evaluate(snap, "f", user, false).enabled;
    assert.equal(enabled, runbookBucket(`s1:${user}`) < 50, user);
    differs += enabled !== runbookBucket(user) < 50 ? 1 : 0;
  }
  assert.ok(differs > 3000, `the salt must change who is selected (${differs})`);
});

test("internal users are enabled while the flag serves, and off when it does not", () => {
  // user-13 has bucket 3: outside a 1% rollout, so only the internal list can enable it.
  assert.equal(bucket("user-13"), 3);
  for (const status of ["running", "paused", "completed"]) {
    const snap = snapshot(flag("f", status, 1, null, ["user-13", "ann@corp"]));
    assert.deepEqual(evaluate(snap, "f", "user-13", false), { enabled: true, reason: "internal_user", version: 7 });
    assert.equal(evaluate(snap, "f", "user-12", false).reason, "not_in_rollout");
    assert.equal(enabledFor(snap.get("f"), "ann@corp"), true);
  }
  for (const status of ["pending", "scheduled", "rolled_back"]) {
    const snap = snapshot(flag("f", status, 100, null, ["user-13"]));
    for (const user of ["user-13", "user-1", "anyone"]) {
      assert.deepEqual(evaluate(snap, "f", user, true), { enabled: false, reason: "flag_off", version: 7 }, status);
      assert.equal(enabledFor(snap.get("f"), user), false);
    }
  }
});

test("the fast boolean path equals the reasoned evaluation in every status, percentage and salt", () => {
  const users = Array.from({ length: 1000 }, (_, i) => `user-${i}`);
  const internal = users.filter((_, i) => i % 37 === 0);
  let checked = 0;
  for (const status of ["pending", "scheduled", "running", "paused", "rolled_back", "completed"]) {
    for (const percent of [0, 1, 10, 50, 99, 100]) {
      for (const salt of [null, "s1"]) {
        for (const list of [[], internal]) {
          const compiled = snapshot(flag("f", status, percent, salt, list)).get("f");
          for (const user of users) {
            assert.equal(enabledFor(compiled, user), evaluate(new Map([["f", compiled]]), "f", user, false).enabled);
            checked += 1;
          }
        }
      }
    }
  }
  assert.equal(checked, 144_000);
});

test("an unknown flag, or a user id that is not a string, answers the default without a version", () => {
  const snap = snapshot(flag("f", "running", 100));
  for (const fallback of [false, true]) {
    assert.deepEqual(evaluate(snap, "other", "user-1", fallback), { enabled: fallback, reason: "default", version: null });
    assert.deepEqual(evaluate(snap, "f", undefined, fallback), { enabled: fallback, reason: "default", version: null });
  }
});

test("malformed digests are skipped and the rest kept", () => {
  const compiled = compileFlag({ ...flag("f", "running", 0), internal_users_sha256: [sha256Hex("a"), "zz", "ab"] });
  assert.equal(compiled.internal.size, 1);
  assert.equal(enabledFor(compiled, "a"), true);
});

test("wire data is checked: a change is a tombstone or a full flag; a body has a flags array", () => {
  assert.deepEqual(parseChange('{"name": "a", "deleted": true}'), { kind: "deleted", name: "a" });
  const upsert = parseChange(
    '{"name":"a","version":3,"status":"running","stage":"s1","percent":5,"salt":null,"internal_users_sha256":[]}',
  );
  assert.equal(upsert.kind, "upsert");
  assert.equal(upsert.flag.percent, 5);
  for (const bad of [
    '{"name": "a", "deleted": false}',
    '{"name": "a"}',
    "not json",
    '{"name":"a","version":3,"status":"flying","stage":"s","percent":5}',
    '{"name":"a","version":3,"status":"running","stage":"s","percent":101}',
    '{"name":"a","version":-1,"status":"running","stage":"s","percent":5}',
  ]) {
    assert.throws(() => parseChange(bad), undefined, bad);
  }
  assert.throws(() => parseConfigBody({ flag: [] }));
  assert.deepEqual(parseConfigBody({ flags: [] }), { flags: [] });
});
