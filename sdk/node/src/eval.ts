// Local evaluation: the service's rules (`GET /flags/{flag}/users/{user}`) bit for bit. Pure.

import * as crypto from "node:crypto";

import type { CompiledFlag, Snapshot } from "./config.js";

/** Why a user got their answer, spelled like the service. */
export type Reason =
  /** The flag serves nobody (pending, scheduled or rolled back). */
  | "flag_off"
  /** The user is on the flag's internal list. */
  | "internal_user"
  /** The user's bucket is below the flag's percentage. */
  | "in_rollout"
  /** The user's bucket is at or above the flag's percentage. */
  | "not_in_rollout"
  /** The flag is unknown (or no configuration has arrived yet): the default was answered. */
  | "default";

/** An answer with its explanation. */
export interface Evaluation {
  readonly enabled: boolean;
  readonly reason: Reason;
  /** The flag's version the answer came from; `null` when the default was answered. */
  readonly version: number | null;
}

type Digest = (algorithm: string, data: string, encoding: "binary") => string;

// `crypto.hash` (node >= 20.12) hashes a string (as UTF-8) in one call without a Hash object; its
// "binary" (latin1) output, one character per byte, is cheaper than a Buffer. Older node 20s fall back.
const oneShot = (crypto as { hash?: Digest }).hash as Digest | undefined;
const digest: Digest =
  oneShot ?? ((algorithm, data, encoding) => crypto.createHash(algorithm).update(data, "utf8").digest(encoding));

function bucketOfDigest(d: string): number {
  // The first four bytes, big-endian, as an unsigned 32-bit integer.
  return (((d.charCodeAt(0) << 24) | (d.charCodeAt(1) << 16) | (d.charCodeAt(2) << 8) | d.charCodeAt(3)) >>> 0) % 100;
}

/** Bucket of a raw key: the first 4 bytes of MD5(key's UTF-8), big-endian, mod 100 (the runbook's hashing). */
export function bucket(key: string): number {
  return bucketOfDigest(digest("md5", key, "binary"));
}

/** Bucket of a user for a flag: the user id alone without a salt, `"{salt}:{user}"` with one. */
export function userBucket(salt: string | null, user: string): number {
  return bucket(salt === null ? user : `${salt}:${user}`);
}

/**
 * Whether a flag enables a user: the hot path, no allocation beyond the digests. The answer is
 * `serves && (internal || bucket < percent)`, so the cheaper test goes first and each digest is
 * only paid when it can change the answer: none at 100%, no MD5 at 0%, the SHA-256 only for
 * users outside the percentage of a flag that has internal users.
 */
export function enabledFor(flag: CompiledFlag, user: string): boolean {
  if (!flag.serves) return false;
  const percent = flag.config.percent;
  if (percent >= 100) return true;
  if (percent > 0) {
    const key = flag.saltPrefix === null ? user : flag.saltPrefix + user;
    if (bucketOfDigest(digest("md5", key, "binary")) < percent) return true;
  }
  return flag.internal.size > 0 && flag.internal.has(digest("sha256", user, "binary"));
}

/** The answer for a user with its reason, the service's rules in their order. */
export function evaluateFlag(flag: CompiledFlag, user: string): Evaluation {
  const version = flag.config.version;
  if (!flag.serves) return { enabled: false, reason: "flag_off", version };
  if (flag.internal.size > 0 && flag.internal.has(digest("sha256", user, "binary"))) {
    return { enabled: true, reason: "internal_user", version };
  }
  return userBucket(flag.config.salt, user) < flag.config.percent
    ? { enabled: true, reason: "in_rollout", version }
    : { enabled: false, reason: "not_in_rollout", version };
}

/** Evaluates `flag` for `user` against a snapshot; an unknown flag (or a user id that is not a string) answers `fallback`. */
export function evaluate(snapshot: Snapshot, flag: string, user: string, fallback: boolean): Evaluation {
  const compiled = snapshot.get(flag);
  if (compiled === undefined || typeof user !== "string") return { enabled: fallback, reason: "default", version: null };
  return evaluateFlag(compiled, user);
}
