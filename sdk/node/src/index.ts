// Node client for rollout-controller: flags evaluated in the application's process, kept current
// by the service's change stream, outcomes reported back by cohort.
//
// Data flow: `Client.create` starts a background loop that opens `GET /stream` (Server-Sent
// Events: a `snapshot`, then one `change` per flag update) and swaps an immutable snapshot on each
// event; when the stream cannot be opened it fetches `GET /flags/config` instead, and it
// reconnects with jittered exponential backoff, sending `Last-Event-ID`. `client.isEnabled`
// evaluates against the current snapshot with the service's own rules (MD5 bucketing, internal
// users as SHA-256 digests): synchronous, no I/O, the last known configuration while disconnected.
// `client.record` counts outcomes per flag and cohort in memory; an unref'd timer pushes them to
// `POST /flags/{flag}/metrics` every few seconds.
//
// Modules: `config` (wire types, checked parsing, the snapshot), `eval` (bucketing and the rules,
// pure), `sse` (the event-stream parser, pure), `backoff` (reconnection delays), `report`
// (tallies, histogram and outbox, pure), `client` (the client, its loop and its timer).

export { Client, type ClientOptions, type Logger, SdkError } from "./client.js";
export { type ConfigBody, type FlagConfig, type Status, sha256Hex } from "./config.js";
export { type Evaluation, type Reason, bucket, userBucket } from "./eval.js";
export type { Cohort, Outcome } from "./report.js";
