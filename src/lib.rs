//! rollout-controller: staged feature rollouts with guard rails.
//!
//! App services ask, per user, whether a flag is on; the answer comes from an in-process
//! [`snapshot`] of every flag (MD5 bucket < percent, plus an internal allow-list), never from a
//! round trip to the store. Operators change rollouts through the HTTP API, whose handlers call
//! only the application layer ([`app`]); [`rollouts`] applies the pure state machine of [`domain`]
//! and writes the result to the [`store`] (Redis, one node or a cluster, or in-memory) with a
//! version check. The [`controller`] (one leader among the replicas) advances flags whose soak
//! passed with healthy guards and rolls back on a breach; pushed metrics can roll back at once.
//! Every write publishes a change; each replica's feed task re-reads that flag
//! into its snapshot within milliseconds, and re-reads everything periodically as a safety net.
//!
//! Modules, outermost first (dependencies point down this list; ARCHITECTURE.md gives each one's
//! layer):
//! - [`cli`]: the `rollout` command line: `serve`, and the operator commands (tables, `doctor`).
//! - [`client`]: the typed HTTP client the operator commands talk to the service through.
//! - [`server`]: wires store, snapshot feed, application layer and HTTP (header-read and write
//!   timeouts, connection limit, JSON parse errors); supervises the tasks; drains, then shuts down
//!   gracefully.
//! - [`config`]: typed settings: defaults → file → env → flags.
//! - [`http`]: the axum edge, one file per concern: parse, authorize, call [`app`], render.
//! - [`app`]: the application layer, every use case the edge serves (evaluations, flags and their
//!   reads, incoming guard signals and the push judge, this replica's status).
//! - [`controller`]: the leader-elected stepper: advance when soaked and healthy, roll back on breach,
//!   restore flags the store lost.
//! - [`sources`]: Alertmanager, Customer.io and Prometheus signals: parse and verify what they send,
//!   query Prometheus; they change no rollout state.
//! - [`review`]: the post-launch review: its JSON and Markdown (served on request, posted by the
//!   leader when it is due).
//! - [`timeline`]: the runbook's timeline around the plan: scheduled starts, checks, approvals,
//!   advance windows, the emergency stop, the freeze, the review's posting.
//! - [`rollouts`]: read–transition–conditional write, shared by [`app`] and the controller; guard
//!   health and the recording of guard signals.
//! - [`notify`]: outbound webhooks and rollback hooks, off the transition path.
//! - [`telemetry`]: Prometheus metrics of this replica.
//! - [`snapshot`]: the hot path's in-process copy of all flags, fed by the change feed.
//! - [`store`]: storage by capability (`FlagStore`, `MetricStore`, `Coordination`; `Store` is all
//!   three); Redis (one node or a cluster) and memory.
//! - [`clock`]: injected time.
//! - [`domain`]: pure bucketing, plan, state machine, guard verdicts with their evidence
//!   (confidence sequences) and the review timeline.
//! - [`util`]: std idioms every layer shares (poison-tolerant locks, an error's cause chain).

pub mod app;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod controller;
pub mod domain;
pub mod http;
pub mod notify;
pub mod review;
pub mod rollouts;
pub mod server;
pub mod snapshot;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod timeline;
pub mod util;
