//! Rust client for rollout-controller: flags evaluated in the application's process, kept current
//! by the service's change stream, outcomes reported back by cohort.
//!
//! Data flow: [`Client::builder`] starts two background tasks. The sync task opens `GET /stream`
//! (Server-Sent Events: a `snapshot`, then one `change` per flag update) and swaps an immutable
//! snapshot on each event; when the stream cannot be opened it fetches `GET /flags/config`
//! instead, and it reconnects with jittered exponential backoff, sending `Last-Event-ID`.
//! [`Client::is_enabled`] evaluates against the current snapshot with the service's own rules
//! (MD5 bucketing, internal users as SHA-256 digests): no I/O, no waiting, the last known
//! configuration while disconnected. [`Client::record`] counts outcomes per flag and cohort in
//! memory; the report task pushes them to `POST /flags/{flag}/metrics` every few seconds.
//!
//! Modules:
//! - `config`: the wire types and the evaluation-ready snapshot.
//! - `eval`: bucketing and the evaluation rules (pure).
//! - `sse`: the event-stream parser (pure; public, for other readers of the stream such as the
//!   `rollout status --watch` command).
//! - `backoff`: reconnection delays.
//! - `report`: outcome tallies and the outbox of unsent reports (pure).
//! - `client`: the builder, the client and its two tasks.

mod backoff;
mod client;
mod config;
mod eval;
mod report;
pub mod sse;

pub use client::{Client, ClientBuilder, Error};
pub use config::{ConfigBody, FlagConfig, Status};
pub use eval::{Evaluation, Reason, bucket, user_bucket};
pub use report::{Cohort, Outcome};
