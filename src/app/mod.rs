//! The application layer: every use case the HTTP edge serves, and the only thing the edge calls.
//!
//! A handler parses and authorizes a request, calls one method of [`App`] and renders what it
//! returns; it never reaches the store, builds an audit event or spawns a task (like mini-redis's
//! commands, which only call `Db`). The methods are grouped by concern, one file each:
//! - [`evaluate`]: answers from the snapshot: the hot path, OpenFeature, `explain`;
//! - [`clients`]: what clients that evaluate locally read: the configuration, its change
//!   stream, batch evaluations;
//! - [`flags`]: define flags and drive their rollouts (through [`crate::rollouts`]), and read
//!   them back: guard health, history, the post-launch review, the deletion audit;
//! - [`signals`]: guard signals coming in (metrics pushes, Customer.io events, Alertmanager
//!   payloads) and their per-source counters; [`push_judge`] judges a flag after a push, at most
//!   once per gap, deferring the rest to a task the server supervises;
//! - [`status`]: what this replica says about itself: `/admin/status`, readiness, metrics;
//! - [`timeline`]: the runbook's timeline around the plan (through [`crate::timeline`]): start now
//!   or at a time, cancel, approve, a flag's checks, the emergency stop and the freeze.
//!
//! Automatic decisions are [`crate::controller::judge`]'s and state changes [`crate::rollouts`]'s:
//! this layer sits above both, and neither calls it.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::rollouts::Rollouts;
use crate::snapshot::Snapshot;
use crate::sources::{SignalStats, SourcesSettings};
use crate::store::Store;
use crate::telemetry::Telemetry;
use crate::timeline::Timeline;

pub mod clients;
pub mod evaluate;
pub mod flags;
pub mod push_judge;
pub mod signals;
pub mod status;
pub mod timeline;

use self::clients::{StreamSettings, Streams};
use self::push_judge::{DeferredJudgements, PushJudge};
use self::status::OpsInfo;

/// The application layer. Shared behind one `Arc` (the edge's state holds it); every field is
/// private, so the edge reaches the store, the snapshot and the clock only through its methods.
pub struct App {
    rollouts: Rollouts,
    /// Scheduled starts, checks, approvals, the freeze and the emergency stop.
    timeline: Timeline,
    store: Arc<dyn Store>,
    snapshot: Arc<Snapshot>,
    clock: Arc<dyn Clock>,
    telemetry: Arc<Telemetry>,
    /// The flag `GET /flag/{user}` answers for.
    default_flag: Box<str>,
    signal_stats: Arc<SignalStats>,
    sources: SourcesSettings,
    push_judge: Arc<PushJudge>,
    ops: OpsInfo,
    /// Readiness fails when the snapshot is older than this.
    max_snapshot_age: Duration,
    /// The change streams open on this replica.
    streams: Streams,
}

/// What the application layer is made of: the handles it shares with the rest of the process
/// (the controller, the change feed), and how this replica is set up.
pub struct Parts {
    pub rollouts: Rollouts,
    pub timeline: Timeline,
    pub store: Arc<dyn Store>,
    pub snapshot: Arc<Snapshot>,
    pub clock: Arc<dyn Clock>,
    pub telemetry: Arc<Telemetry>,
    pub signal_stats: Arc<SignalStats>,
    pub sources: SourcesSettings,
    pub ops: OpsInfo,
    pub default_flag: String,
    /// Pushes judge a flag at most once per this gap (see [`push_judge`]).
    pub push_judge_gap: Duration,
    pub max_snapshot_age: Duration,
    pub streams: StreamSettings,
}

impl App {
    /// The application layer, and the task that runs the judgements its push judge defers: the
    /// caller spawns it among its supervised tasks and stops it on shutdown.
    pub fn new(parts: Parts) -> (Arc<App>, DeferredJudgements) {
        let (push_judge, deferred) = PushJudge::new(parts.push_judge_gap, parts.rollouts.clone());
        let app = App {
            rollouts: parts.rollouts,
            timeline: parts.timeline,
            store: parts.store,
            snapshot: parts.snapshot,
            clock: parts.clock,
            telemetry: parts.telemetry,
            default_flag: parts.default_flag.into(),
            signal_stats: parts.signal_stats,
            sources: parts.sources,
            push_judge,
            ops: parts.ops,
            max_snapshot_age: parts.max_snapshot_age,
            streams: Streams::new(parts.streams),
        };
        (Arc::new(app), deferred)
    }
}
