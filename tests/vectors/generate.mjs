// Generates tests/vectors/buckets.json: user ids and their bucket, computed by exactly the
// runbook's shouldUseCio hashing (Node's crypto MD5). Run: node tests/vectors/generate.mjs
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";

function bucketOf(userId) {
  const hash = createHash("md5").update(userId).digest("hex");
  return parseInt(hash.substring(0, 8), 16) % 100;
}

// Deterministic PRNG (mulberry32) so the file is reproducible.
let seed = 0x5eed;
function rand() {
  seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (s) => s[Math.floor(rand() * s.length)];
const alphabets = [
  "abcdefghijklmnopqrstuvwxyz0123456789-_.@+",
  "ÄÖÜäöüßéèêçñøåæ",
  "日本語ユーザー中文用户한국어",
  "😀🚀🎉👩‍💻🇩🇪",
  "абвгдежзийклмнопрстуфхцчшщыэюя",
  " \t\"'\\/{}[]:,",
];

const ids = new Set(["prod-audit-test", "user-1", "alice@example.com", "smoke-test-1700000000", ""]);
for (let i = 0; ids.size < 3000; i++) ids.add(`user-${i}`);
for (let i = 0; ids.size < 6000; i++) ids.add(`${pick(["ann", "bob", "cy", "dee"])}.${i}@example.com`);
while (ids.size < 12000) {
  const len = 1 + Math.floor(rand() * 40);
  const alphabet = Array.from(pick(alphabets));
  let id = "";
  for (let j = 0; j < len; j++) id += rand() < 0.2 ? pick(Array.from(pick(alphabets))) : pick(alphabet);
  ids.add(id);
}
ids.add("x".repeat(512));

const vectors = Array.from(ids, (id) => [id, bucketOf(id)]);
writeFileSync(new URL("./buckets.json", import.meta.url), JSON.stringify(vectors) + "\n");
console.log(`wrote ${vectors.length} vectors`);
