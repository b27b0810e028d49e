//! Where rollout state lives, behind one small trait per capability:
//! - [`FlagStore`]: flag documents, the index, history, the deletion audit, the change feed and
//!   the catalog the snapshot's resync reads;
//! - [`MetricStore`]: metric windows, their bucket fields spelled once in [`fields`];
//! - [`Coordination`]: the backend's kind and reachability, the leader lease, de-duplication keys
//!   and the store's clock.
//!
//! [`Store`] is all three. Each is implemented by [`RedisStore`] (one Redis or a Redis Cluster)
//! and by [`MemoryStore`] (this process only); `tests/api/store_contract.rs` holds every one of
//! them to one contract per capability.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::domain::guards::{Guard, HealthPoint, MetricSample, MetricSeries, WindowTotals};
use crate::domain::rollout::{AuditEvent, Deletion, Flag};

pub mod fields;
pub mod memory;
pub mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

/// Published after every write: which flag changed and its new version (0 when deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub flag: String,
    pub version: u64,
}

/// Which version of a flag the store holds, without its document: what a replica compares with
/// its snapshot so that a full re-read fetches only the flags that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub name: String,
    pub version: u64,
    /// When this incarnation of the flag was created; `None` when the store does not say (re-read it).
    pub created_at: Option<i64>,
}

/// A full read of the store's index: every flag's [`Stamp`], and the store's generation.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Names the store's data set: set once when absent, so it changes exactly when the store lost
    /// its data (restarted without persistence, flushed). A flag missing from a read of the same
    /// generation was deleted; one missing from a new generation was lost.
    pub generation: String,
    pub stamps: Vec<Stamp>,
    /// Names the index lists whose flag is not there: being deleted or created at this instant,
    /// or lost with the one cluster node that held them (its slots came back empty while the
    /// index's node kept its data, so the generation did not change).
    pub missing: Vec<String>,
}

/// A fresh random generation id.
pub fn new_generation() -> String {
    let mut bytes = [0u8; 12];
    // Without the OS random source the id is still the time, which tells stores apart well enough.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        return format!("t{nanos:x}");
    }
    hex::encode(bytes)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unreachable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("stored data for {key} cannot be read")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// Nothing was written: a value that does not serialize never reaches the store as an empty document.
    #[error("{what} cannot be written as JSON")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    /// True when the failure is the store being out of reach (as opposed to bad data).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The outcome of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Yes,
    /// The stored version was not the expected one; this is the version found (0 = absent).
    Conflict {
        found: u64,
    },
}

/// Flag documents and everything that follows them: the index, each flag's history, the
/// deletion audit, the change feed, and the catalog the snapshot's periodic re-read starts from.
#[async_trait]
pub trait FlagStore: Send + Sync + 'static {
    /// Every flag's [`Stamp`] and the store's generation (set first when absent): cheap, no
    /// documents. The snapshot's periodic re-read starts here, then fetches only what changed, and
    /// uses the generation to tell a deleted flag from a lost one.
    async fn load_stamps(&self) -> StoreResult<Catalog>;

    /// The store's generation now (`None` when the store holds none: it lost its data since the
    /// last [`FlagStore::load_stamps`]).
    async fn generation(&self) -> StoreResult<Option<String>>;

    async fn get_flag(&self, name: &str) -> StoreResult<Option<Flag>>;

    /// The named flags that exist, in no particular order.
    async fn get_flags(&self, names: &[String]) -> StoreResult<Vec<Flag>>;

    /// Every flag.
    async fn list_flags(&self) -> StoreResult<Vec<Flag>> {
        let names: Vec<String> = self.load_stamps().await?.stamps.into_iter().map(|s| s.name).collect();
        self.get_flags(&names).await
    }

    /// Atomically: if the stored version is `expected` (0 = the flag must not exist), store `flag`,
    /// list it in the index, append `event` to its history and publish a [`Change`].
    async fn write_flag(&self, flag: &Flag, expected: u64, event: &AuditEvent) -> StoreResult<Written>;

    /// Atomically: if the stored version is `expected` (0 = absent), removes the flag, its
    /// history and its index entry, appends `record` (when given) to the deletion audit and
    /// publishes the deletion (version 0). Published even when nothing was there, so replicas drop
    /// a copy of a flag the store had lost. A creation and a deletion of one flag, in any
    /// interleaving, end with the flag either deleted or stored *and* listed, never stored unlisted.
    async fn delete_flag(&self, name: &str, expected: u64, record: Option<&Deletion>) -> StoreResult<Written>;

    /// The deletion audit, newest first (the last [`DELETIONS_CAP`] or so).
    async fn deletions(&self, limit: usize) -> StoreResult<Vec<Deletion>>;

    /// Audit events, newest first.
    async fn history(&self, name: &str, limit: usize) -> StoreResult<Vec<AuditEvent>>;

    /// Appends an event to a flag's history without changing the flag (e.g. a resolved alert);
    /// does nothing when the flag does not exist.
    async fn append_history(&self, flag: &str, event: &AuditEvent) -> StoreResult<()>;

    /// The change feed. The stream ends when the subscription is lost; subscribe again.
    async fn subscribe(&self) -> StoreResult<BoxStream<'static, Change>>;
}

/// Metric windows: pushed samples and pulled values counted in the time buckets of a series
/// (their fields spelled by [`fields`]), read back summed over a window.
#[async_trait]
pub trait MetricStore: Send + Sync + 'static {
    /// Adds a pushed sample to the time bucket of `now_ms` in the series (O(1), one round trip).
    async fn record_metrics(
        &self,
        flag: &str,
        series: &MetricSeries,
        now_ms: i64,
        sample: &MetricSample,
    ) -> StoreResult<()>;

    /// Records one value pulled for a guard (`None`: the query failed or gave no number).
    async fn record_pulled(
        &self,
        flag: &str,
        series: &MetricSeries,
        now_ms: i64,
        guard: Guard,
        value: Option<f64>,
    ) -> StoreResult<()>;

    /// Sums the series' buckets from `from_ms` to `to_ms`; gauges take their latest value.
    async fn read_window(
        &self,
        flag: &str,
        series: &MetricSeries,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<WindowTotals>;

    /// Appends `point` to the flag's guard history: the leader's readings over one stage entry,
    /// which the metric windows (they expire) cannot give back. A point of another
    /// `stage_version` than the newest kept starts the history anew (the old one is dropped). At
    /// most [`GUARD_HISTORY_CAP`] points are kept: past that every other point is dropped, the
    /// newest always kept, so the history still spans the whole stage at half the density. Does
    /// nothing when the flag does not exist; deleting the flag deletes its history, in the same
    /// atomic step; a history not written for [`GUARD_HISTORY_TTL`] expires.
    async fn record_health(&self, flag: &str, point: &HealthPoint) -> StoreResult<()>;

    /// The flag's guard history, oldest first (empty when there is none).
    async fn health_history(&self, flag: &str) -> StoreResult<Vec<HealthPoint>>;
}

/// What replicas coordinate through, and the backend itself: which store it is and whether it
/// answers, the leader lease, de-duplication keys, and the store's clock.
#[async_trait]
pub trait Coordination: Send + Sync + 'static {
    /// `"redis"`, `"redis-cluster"` or `"memory"`.
    fn kind(&self) -> &'static str;

    /// A cheap round trip, to tell whether the store is reachable.
    async fn ping(&self) -> StoreResult<()>;

    /// Takes or renews the leader lease for `holder`; true when `holder` leads for the next `ttl`.
    async fn try_lead(&self, holder: &str, ttl: Duration) -> StoreResult<bool>;

    /// Gives the lease up at once if `holder` has it.
    async fn resign(&self, holder: &str) -> StoreResult<()>;

    /// Who holds the lease now.
    async fn leader(&self) -> StoreResult<Option<String>>;

    /// True the first time `key` is seen within `ttl` (deduplication of webhook deliveries).
    async fn remember_once(&self, key: &str, ttl: Duration) -> StoreResult<bool>;

    /// Forgets a key remembered by [`Coordination::remember_once`] (when acting on it failed).
    async fn forget(&self, key: &str) -> StoreResult<()>;

    /// The store's own clock in ms since the Unix epoch (Redis `TIME`), to check replicas' clocks
    /// against; `None` when the store has no clock of its own (memory).
    async fn time_ms(&self) -> StoreResult<Option<i64>>;

    /// A setting shared by every replica and kept across restarts (the controller freeze), as
    /// JSON; `None` removes it.
    async fn put_setting(&self, name: &str, value: Option<&str>) -> StoreResult<()>;

    /// A setting written by [`Coordination::put_setting`].
    async fn setting(&self, name: &str) -> StoreResult<Option<String>>;

    /// Records the latest run of one of a flag's checks (JSON), replacing the previous one: what
    /// the leader ran, for the next leader and for every replica's `GET /flags/{flag}/checks`.
    async fn put_check_run(&self, flag: &str, check: &str, run: &str) -> StoreResult<()>;

    /// The latest run of each of a flag's checks, as JSON, by check name.
    async fn check_runs(&self, flag: &str) -> StoreResult<Vec<(String, String)>>;
}

/// Every capability at once: what the server opens and the application layer holds
/// (`Arc<dyn Store>`). A part that needs one capability can take it alone (`&dyn MetricStore`);
/// an `Arc<dyn Store>` coerces to `Arc<dyn FlagStore>` and the others.
pub trait Store: FlagStore + MetricStore + Coordination {}

impl<T: FlagStore + MetricStore + Coordination> Store for T {}

/// Most audit events kept per flag (the stream is trimmed beyond this).
pub const HISTORY_CAP: usize = 10_000;

/// Most deletion records kept (the oldest go beyond this).
pub const DELETIONS_CAP: usize = 10_000;

/// Most guard readings kept per flag for its current stage (see [`MetricStore::record_health`]).
pub const GUARD_HISTORY_CAP: usize = 720;

/// How long a flag's guard history outlives its last reading (a flag no leader judges any more).
pub const GUARD_HISTORY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Keeps every other point of `points`, the newest always, once there are more than `cap`: the
/// thinning every store applies to a guard history.
pub fn thin<T>(points: &mut std::collections::VecDeque<T>, cap: usize) {
    if points.len() <= cap {
        return;
    }
    let newest = points.len() - 1;
    let mut index = 0;
    points.retain(|_| {
        let keep = (newest - index).is_multiple_of(2);
        index += 1;
        keep
    });
}
