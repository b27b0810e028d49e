// The flag configuration the service publishes (`GET /flags/config`, `/stream`), its checked
// parsing, and the immutable, evaluation-ready snapshot the client builds from it.

import { createHash } from "node:crypto";

/** A flag's lifecycle state, as the service reports it. */
export type Status = "pending" | "scheduled" | "running" | "paused" | "rolled_back" | "completed";

const STATUSES: ReadonlySet<string> = new Set<Status>([
  "pending",
  "scheduled",
  "running",
  "paused",
  "rolled_back",
  "completed",
]);

/** Whether a flag in this status serves anyone at all (internal users first). */
export function serves(status: Status): boolean {
  return status === "running" || status === "paused" || status === "completed";
}

/** One flag's evaluation configuration, exactly as it travels on the wire. */
export interface FlagConfig {
  readonly name: string;
  readonly version: number;
  readonly status: Status;
  readonly stage: string;
  /** What the service evaluates with (0 when pending, scheduled or rolled back). */
  readonly percent: number;
  readonly salt: string | null;
  /** Lowercase hex SHA-256 of each internal user id's UTF-8 bytes. */
  readonly internal_users_sha256: readonly string[];
}

/** The body of `GET /flags/config` and of the stream's `snapshot` event; also the bootstrap file. */
export interface ConfigBody {
  readonly flags: readonly FlagConfig[];
}

/** The data of a stream `change` event: a flag's new configuration, or its deletion. */
export type Change = { readonly kind: "upsert"; readonly flag: FlagConfig } | { readonly kind: "deleted"; readonly name: string };

/** Wire data that is not what the contract says. */
export class FormatError extends Error {
  override readonly name = "FormatError";
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Checks one flag's configuration; throws a {@link FormatError} naming the bad field. */
export function parseFlagConfig(value: unknown): FlagConfig {
  if (!isObject(value)) throw new FormatError("a flag configuration must be an object");
  const { name, version, status, stage, percent, salt, internal_users_sha256: internal } = value;
  if (typeof name !== "string") throw new FormatError("flag: \"name\" must be a string");
  const bad = (field: string, want: string) => new FormatError(`flag ${JSON.stringify(name)}: "${field}" must be ${want}`);
  if (typeof version !== "number" || !Number.isSafeInteger(version) || version < 0) throw bad("version", "a non-negative integer");
  if (typeof status !== "string" || !STATUSES.has(status)) throw bad("status", `one of ${[...STATUSES].join(", ")}`);
  if (typeof stage !== "string") throw bad("stage", "a string");
  if (typeof percent !== "number" || !Number.isInteger(percent) || percent < 0 || percent > 100) {
    throw bad("percent", "an integer from 0 to 100");
  }
  if (salt !== undefined && salt !== null && typeof salt !== "string") throw bad("salt", "a string or null");
  if (internal !== undefined && !(Array.isArray(internal) && internal.every((h) => typeof h === "string"))) {
    throw bad("internal_users_sha256", "an array of strings");
  }
  return {
    name,
    version,
    status: status as Status,
    stage,
    percent,
    salt: salt ?? null,
    internal_users_sha256: (internal as string[] | undefined) ?? [],
  };
}

/** Checks a whole configuration: `{"flags": [...]}`. */
export function parseConfigBody(value: unknown): ConfigBody {
  if (!isObject(value) || !Array.isArray(value.flags)) throw new FormatError("a configuration must be {\"flags\": [...]}");
  return { flags: value.flags.map(parseFlagConfig) };
}

/** Parses a `change` event's data: `{"name", "deleted": true}` or a full flag configuration. */
export function parseChange(data: string): Change {
  const value: unknown = JSON.parse(data);
  if (isObject(value) && "deleted" in value) {
    if (value.deleted !== true || typeof value.name !== "string") {
      throw new FormatError("a deletion must be {\"name\": \"...\", \"deleted\": true}");
    }
    return { kind: "deleted", name: value.name };
  }
  return { kind: "upsert", flag: parseFlagConfig(value) };
}

/** A flag ready to evaluate: its wire form plus what evaluation needs, precomputed. */
export interface CompiledFlag {
  readonly config: FlagConfig;
  readonly serves: boolean;
  /** `"{salt}:"`, or `null` when the flag has no salt. */
  readonly saltPrefix: string | null;
  /** The internal users' SHA-256 digests as 32-character binary (latin1) strings. */
  readonly internal: ReadonlySet<string>;
}

const HEX_DIGEST = /^[0-9a-fA-F]{64}$/;

export function compileFlag(config: FlagConfig): CompiledFlag {
  // A digest that is not 64 hex digits cannot match any user: it is skipped, not fatal.
  const internal = new Set(
    config.internal_users_sha256.filter((h) => HEX_DIGEST.test(h)).map((h) => Buffer.from(h, "hex").toString("latin1")),
  );
  return {
    config,
    serves: serves(config.status),
    saltPrefix: config.salt === null ? null : `${config.salt}:`,
    internal,
  };
}

/** Every known flag by name. Immutable: a change builds a new snapshot sharing the untouched flags. */
export type Snapshot = ReadonlyMap<string, CompiledFlag>;

export const EMPTY_SNAPSHOT: Snapshot = new Map();

export function snapshotFromBody(body: ConfigBody): Snapshot {
  return new Map(body.flags.map((flag) => [flag.name, compileFlag(flag)]));
}

export function withChange(snapshot: Snapshot, change: Change): Snapshot {
  const next = new Map(snapshot);
  if (change.kind === "upsert") {
    next.set(change.flag.name, compileFlag(change.flag));
  } else {
    next.delete(change.name);
  }
  return next;
}

/** Lowercase hex SHA-256 of a user id, as the service publishes internal users (for tests and tools). */
export function sha256Hex(user: string): string {
  return createHash("sha256").update(user, "utf8").digest("hex");
}
