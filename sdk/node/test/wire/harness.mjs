// What the wire tests share: the service's address and token from the Rust side
// (tests/api/sdk_node.rs), admin requests, bounded polling and the step handshake.
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const URL_ = required("ROLLOUT_URL");
export const TOKEN = required("ROLLOUT_TOKEN");

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: these tests are run by tests/api/sdk_node.rs (cargo test --test api sdk_node)`);
  return value;
}

/** An admin request to `base`; resolves to `{status, body}` (body parsed when JSON). */
export async function admin(method, path, body, base = URL_) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: response.status, body: parsed };
}

/** Like `admin`, but a network failure is a status 0 instead of an exception (the service may be down). */
export async function tryAdmin(method, path, body, base = URL_) {
  try {
    return await admin(method, path, body, base);
  } catch (error) {
    return { status: 0, body: String(error) };
  }
}

/** Polls `check` every `everyMs` until it holds; fails naming `what` after `limitMs`. Resolves to the time it took. */
export async function eventually(limitMs, what, check, everyMs = 5) {
  const start = performance.now();
  for (;;) {
    if (await check()) return performance.now() - start;
    if (performance.now() - start > limitMs) throw new Error(`${what}: not met within ${limitMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** The service's answers for every user, from its batch route (one snapshot version for all). */
export async function serviceAnswers(flag, users, base = URL_) {
  const reply = await admin("POST", `/flags/${flag}/evaluate`, { users }, base);
  if (reply.status !== 200) throw new Error(`batch evaluation of ${flag}: ${reply.status} ${JSON.stringify(reply.body)}`);
  return reply.body;
}

/** Resolves once the client holds `flag` at the version the service has. */
export async function caughtUp(client, flag, base = URL_) {
  const { body } = await admin("GET", `/flags/${flag}`, undefined, base);
  await eventually(10_000, `the SDK holds ${flag} at version ${body.version}`, () => client.flag(flag)?.version === body.version);
}

export function users(count, prefix = "user-") {
  return Array.from({ length: count }, (_, i) => `${prefix}${i}@example.com`);
}

/** Users whose local answer differs from the service's. */
export function mismatches(client, flag, users, expected) {
  return users.filter((user, i) => client.isEnabled(flag, user) !== expected[i]);
}

/** Asks the Rust side to do `name` (stop a process, ...) and waits until it is done. */
export async function step(name, limitMs = 60_000) {
  const dir = required("ROLLOUT_CONTROL_DIR");
  writeFileSync(join(dir, `want-${name}`), "");
  await eventually(limitMs, `the Rust side to ${name}`, () => existsSync(join(dir, `done-${name}`)), 10);
}

/** A logger that keeps the SDK's messages, for assertions and for the output on failure. */
export function keptLogger() {
  const lines = [];
  const keep = (level) => (message) => lines.push(`${level} ${message}`);
  return { lines, warn: keep("warn"), info: keep("info"), debug: keep("debug") };
}
