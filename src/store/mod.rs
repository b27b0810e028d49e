//! Where rollout state lives: one [`Store`] trait, implemented by Redis and by an in-process map.

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::domain::guards::{Guard, MetricSample, MetricSeries, WindowTotals, push_recent};
use crate::domain::rollout::{AuditEvent, Deletion, Flag};

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
    Timeout(std::time::Duration),
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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"redis"`, `"redis-cluster"` or `"memory"`.
    fn kind(&self) -> &'static str;

    /// Every flag's [`Stamp`] and the store's generation (set first when absent): cheap, no
    /// documents. The snapshot's periodic re-read starts here, then fetches only what changed, and
    /// uses the generation to tell a deleted flag from a lost one.
    async fn load_stamps(&self) -> StoreResult<Catalog>;

    /// The store's generation now (`None` when the store holds none: it lost its data since the
    /// last [`Store::load_stamps`]).
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

    /// The change feed. The stream ends when the subscription is lost; subscribe again.
    async fn subscribe(&self) -> StoreResult<BoxStream<'static, Change>>;

    /// A cheap round trip, to tell whether the store is reachable.
    async fn ping(&self) -> StoreResult<()>;

    /// Adds a pushed sample to the time bucket of `now_ms` in the series (O(1), one round trip).
    async fn record_metrics(
        &self,
        flag: &str,
        series: &MetricSeries,
        now_ms: i64,
        sample: &MetricSample,
    ) -> StoreResult<()>;

    /// Sums the series' buckets from `from_ms` to `to_ms`; gauges take their latest value.
    async fn read_window(
        &self,
        flag: &str,
        series: &MetricSeries,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<WindowTotals>;

    /// Records one value pulled for a guard (`None`: the query failed or gave no number).
    async fn record_pulled(
        &self,
        flag: &str,
        series: &MetricSeries,
        now_ms: i64,
        guard: Guard,
        value: Option<f64>,
    ) -> StoreResult<()>;

    /// True the first time `key` is seen within `ttl` (deduplication of webhook deliveries).
    async fn remember_once(&self, key: &str, ttl: std::time::Duration) -> StoreResult<bool>;

    /// Forgets a key remembered by [`Store::remember_once`] (when acting on it failed).
    async fn forget(&self, key: &str) -> StoreResult<()>;

    /// Appends an event to a flag's history without changing the flag (e.g. a resolved alert).
    async fn append_history(&self, flag: &str, event: &AuditEvent) -> StoreResult<()>;

    /// Takes or renews the leader lease for `holder`; true when `holder` leads for the next `ttl`.
    async fn try_lead(&self, holder: &str, ttl: std::time::Duration) -> StoreResult<bool>;

    /// Gives the lease up at once if `holder` has it.
    async fn resign(&self, holder: &str) -> StoreResult<()>;

    /// Who holds the lease now.
    async fn leader(&self) -> StoreResult<Option<String>>;

    /// A setting shared by every replica and kept across restarts (the controller freeze), as
    /// JSON; `None` removes it.
    async fn put_setting(&self, name: &str, value: Option<&str>) -> StoreResult<()>;

    /// A setting written by [`Store::put_setting`].
    async fn setting(&self, name: &str) -> StoreResult<Option<String>>;

    /// Records the latest run of one of a flag's checks (JSON), replacing the previous one.
    async fn put_check_run(&self, flag: &str, check: &str, run: &str) -> StoreResult<()>;

    /// The latest run of each of a flag's checks, as JSON, by check name.
    async fn check_runs(&self, flag: &str) -> StoreResult<Vec<(String, String)>>;

    /// The store's own clock in ms since the Unix epoch (Redis `TIME`), to check replicas' clocks
    /// against; `None` when the store has no clock of its own (memory).
    async fn time_ms(&self) -> StoreResult<Option<i64>>;
}

/// Field of a bucket holding a guard's latest pulled value (NaN when the read failed).
pub fn pulled_field(guard: Guard) -> String {
    format!("pulled:{guard}")
}

/// Field of a bucket counting a guard's pulled reads.
pub fn pulled_count_field(guard: Guard) -> String {
    format!("pulled:{guard}:n")
}

/// Adds one bucket's fields (as stored: counter names, gauge names, `<gauge>_n` report counts,
/// `pulled:<guard>` and `pulled:<guard>:n`).
pub fn add_bucket<'a>(totals: &mut WindowTotals, fields: impl IntoIterator<Item = (&'a str, f64)>) {
    for (name, value) in fields {
        let n = value as u64;
        match name {
            "requests" => totals.requests += n,
            "errors" => totals.errors += n,
            "sent" => totals.sent += n,
            "delivered" => totals.delivered += n,
            "bounced" => totals.bounced += n,
            "complaints" => totals.complaints += n,
            "webhooks" => totals.webhooks += n,
            "webhook_errors" => totals.webhook_errors += n,
            // Buckets are read oldest first, so the last value seen is the latest.
            "p99_latency_ms" => {
                totals.p99_latency_ms = Some(value);
                push_recent(&mut totals.p99_latency_recent, &[value]);
            }
            "p99_latency_ms_n" => totals.p99_latency_reports += n,
            "queue_depth" => {
                totals.queue_depth = Some(value);
                push_recent(&mut totals.queue_depth_recent, &[value]);
            }
            "queue_depth_n" => totals.queue_depth_reports += n,
            other => {
                let Some(pulled) = other.strip_prefix("pulled:") else { continue };
                let (guard, is_count) = match pulled.strip_suffix(":n") {
                    Some(g) => (g, true),
                    None => (pulled, false),
                };
                let Some(guard) = Guard::from_name(guard) else { continue };
                let reading = totals.pulled.entry(guard).or_default();
                if is_count {
                    reading.reads += n;
                } else {
                    reading.latest = value.is_finite().then_some(value);
                }
            }
        }
    }
}

/// Most audit events kept per flag (the stream is trimmed beyond this).
pub const HISTORY_CAP: usize = 10_000;

/// Most deletion records kept (the oldest go beyond this).
pub const DELETIONS_CAP: usize = 10_000;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::add_bucket;
    use crate::domain::guards::{Guard, WindowTotals};

    /// One bucket's fields as the stores write them: counters, gauges with their report counts,
    /// pulled readings (a value, `NaN` for a failed read, with its count).
    fn bucket() -> impl Strategy<Value = Vec<(String, f64)>> {
        let counters =
            ["requests", "errors", "sent", "delivered", "bounced", "complaints", "webhooks", "webhook_errors"];
        let counter =
            (0..counters.len(), 1u32..1000).prop_map(move |(i, n)| vec![(counters[i].to_owned(), f64::from(n))]);
        let gauge = (prop::bool::ANY, 0u32..5000, 1u32..4).prop_map(|(p99, v, n)| {
            let name = if p99 { "p99_latency_ms" } else { "queue_depth" };
            vec![(name.to_owned(), f64::from(v)), (format!("{name}_n"), f64::from(n))]
        });
        let pulled = (0..Guard::ALL.len(), prop::option::of(0u32..100), 1u32..4).prop_map(|(g, v, n)| {
            let g = Guard::ALL[g].as_str();
            vec![(format!("pulled:{g}"), v.map_or(f64::NAN, f64::from)), (format!("pulled:{g}:n"), f64::from(n))]
        });
        // A field appears once per bucket, as in a Redis hash.
        prop::collection::vec(prop_oneof![counter, gauge, pulled], 0..8).prop_map(|parts| {
            let mut fields: Vec<(String, f64)> = Vec::new();
            for (name, value) in parts.into_iter().flatten() {
                match fields.iter_mut().find(|(n, _)| *n == name) {
                    Some(field) => field.1 = value,
                    None => fields.push((name, value)),
                }
            }
            fields
        })
    }

    proptest! {
        /// The Redis store keeps per-bucket totals of sealed buckets and merges them: that must
        /// give exactly the window summed field by field.
        #[test]
        fn merging_per_bucket_totals_equals_summing_the_buckets(buckets in prop::collection::vec(bucket(), 0..12)) {
            let mut summed = WindowTotals::default();
            let mut merged = WindowTotals::default();
            for fields in &buckets {
                add_bucket(&mut summed, fields.iter().map(|(k, v)| (k.as_str(), *v)));
                let mut one = WindowTotals::default();
                add_bucket(&mut one, fields.iter().map(|(k, v)| (k.as_str(), *v)));
                merged.merge(&one);
            }
            prop_assert_eq!(merged, summed);
        }
    }
}
