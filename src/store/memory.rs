//! The embedded store: state in this process only. For single-process use and trying it out.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

use super::fields::{self, Update};
use super::{
    Catalog, Change, Coordination, DELETIONS_CAP, FlagStore, GUARD_HISTORY_CAP, HISTORY_CAP, MetricStore, Stamp,
    StoreResult, Written, new_generation, thin,
};
use crate::domain::guards::{Guard, HealthPoint, MetricSample, MetricSeries, WindowTotals};
use crate::domain::rollout::{AuditEvent, Deletion, Flag};

/// A metric bucket: its fields (see [`fields`]) and when it expires (in the caller's clock).
struct Bucket {
    fields: HashMap<String, f64>,
    expires_at_ms: i64,
}

/// Metric buckets by flag, series id and bucket number.
type Buckets = HashMap<BucketKey, Bucket>;

type BucketKey = (String, String, i64);

struct Entry {
    flag: Flag,
    history: VecDeque<AuditEvent>,
    /// The guard history of the current stage entry, oldest first.
    health: VecDeque<HealthPoint>,
}

/// The flags and the deletion audit, under one lock: a deletion and its record are one change.
#[derive(Default)]
struct Flags {
    entries: HashMap<String, Entry>,
    /// Newest first.
    deletions: VecDeque<Deletion>,
}

pub struct MemoryStore {
    flags: Mutex<Flags>,
    changes: broadcast::Sender<Change>,
    metrics: Mutex<Buckets>,
    lease: Mutex<Option<(String, Instant)>>,
    seen: Mutex<HashMap<String, Instant>>,
    settings: Mutex<HashMap<String, String>>,
    check_runs: Mutex<HashMap<String, std::collections::BTreeMap<String, String>>>,
    /// The process's map is never lost while it runs: one generation for its lifetime.
    generation: String,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            flags: Mutex::new(Flags::default()),
            changes: broadcast::channel(1024).0,
            metrics: Mutex::new(HashMap::new()),
            lease: Mutex::new(None),
            seen: Mutex::new(HashMap::new()),
            settings: Mutex::new(HashMap::new()),
            check_runs: Mutex::new(HashMap::new()),
            generation: new_generation(),
        }
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // No critical section here can panic halfway through a change (they compare, clone, insert,
    // remove), so a poisoned lock still holds sound data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Flags> {
        locked(&self.flags)
    }

    fn publish(&self, flag: &str, version: u64) {
        // No receivers is fine: nobody is listening yet.
        let _ = self.changes.send(Change { flag: flag.to_owned(), version });
    }
}

#[async_trait]
impl FlagStore for MemoryStore {
    async fn load_stamps(&self) -> StoreResult<Catalog> {
        let stamps = self
            .lock()
            .entries
            .values()
            .map(|e| Stamp {
                name: e.flag.name.clone(),
                version: e.flag.state.version,
                created_at: Some(e.flag.state.created_at),
            })
            .collect();
        Ok(Catalog { generation: self.generation.clone(), stamps, missing: Vec::new() })
    }

    async fn generation(&self) -> StoreResult<Option<String>> {
        Ok(Some(self.generation.clone()))
    }

    async fn get_flag(&self, name: &str) -> StoreResult<Option<Flag>> {
        Ok(self.lock().entries.get(name).map(|e| e.flag.clone()))
    }

    async fn get_flags(&self, names: &[String]) -> StoreResult<Vec<Flag>> {
        let flags = self.lock();
        Ok(names.iter().filter_map(|name| flags.entries.get(name).map(|e| e.flag.clone())).collect())
    }

    async fn write_flag(&self, flag: &Flag, expected: u64, event: &AuditEvent) -> StoreResult<Written> {
        {
            let mut flags = self.lock();
            let found = flags.entries.get(&flag.name).map_or(0, |e| e.flag.state.version);
            if found != expected {
                return Ok(Written::Conflict { found });
            }
            let entry = flags.entries.entry(flag.name.clone()).or_insert_with(|| Entry {
                flag: flag.clone(),
                history: VecDeque::new(),
                health: VecDeque::new(),
            });
            entry.flag = flag.clone();
            entry.history.push_front(event.clone());
            entry.history.truncate(HISTORY_CAP);
        }
        self.publish(&flag.name, flag.state.version);
        Ok(Written::Yes)
    }

    async fn delete_flag(&self, name: &str, expected: u64, record: Option<&Deletion>) -> StoreResult<Written> {
        {
            let mut flags = self.lock();
            let found = flags.entries.get(name).map_or(0, |e| e.flag.state.version);
            if found != expected {
                return Ok(Written::Conflict { found });
            }
            flags.entries.remove(name);
            if let Some(record) = record {
                flags.deletions.push_front(record.clone());
                flags.deletions.truncate(DELETIONS_CAP);
            }
        }
        self.publish(name, 0);
        Ok(Written::Yes)
    }

    async fn deletions(&self, limit: usize) -> StoreResult<Vec<Deletion>> {
        Ok(self.lock().deletions.iter().take(limit).cloned().collect())
    }

    async fn history(&self, name: &str, limit: usize) -> StoreResult<Vec<AuditEvent>> {
        Ok(self.lock().entries.get(name).map(|e| e.history.iter().take(limit).cloned().collect()).unwrap_or_default())
    }

    async fn append_history(&self, flag: &str, event: &AuditEvent) -> StoreResult<()> {
        if let Some(entry) = self.lock().entries.get_mut(flag) {
            entry.history.push_front(event.clone());
            entry.history.truncate(HISTORY_CAP);
        }
        Ok(())
    }

    async fn subscribe(&self) -> StoreResult<BoxStream<'static, Change>> {
        let receiver = self.changes.subscribe();
        Ok(futures::stream::unfold(receiver, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(change) => return Some((change, rx)),
                    // Missed messages are repaired by the periodic full re-read.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed())
    }
}

#[async_trait]
impl MetricStore for MemoryStore {
    async fn record_metrics(
        &self,
        flag: &str,
        series: &MetricSeries,
        now_ms: i64,
        sample: &MetricSample,
    ) -> StoreResult<()> {
        let mut metrics = locked(&self.metrics);
        if metrics.len() > 4096 {
            metrics.retain(|_, b| b.expires_at_ms > now_ms);
        }
        update_bucket(&mut metrics, flag, series, now_ms, fields::sample_updates(sample));
        Ok(())
    }

    async fn record_pulled(
        &self,
        flag: &str,
        series: &MetricSeries,
        now_ms: i64,
        guard: Guard,
        value: Option<f64>,
    ) -> StoreResult<()> {
        update_bucket(&mut locked(&self.metrics), flag, series, now_ms, fields::pulled_updates(guard, value));
        Ok(())
    }

    async fn read_window(
        &self,
        flag: &str,
        series: &MetricSeries,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<WindowTotals> {
        let metrics = locked(&self.metrics);
        let mut totals = WindowTotals::default();
        let mut key = (flag.to_owned(), series.id.clone(), 0);
        for b in series.bucket_of(from_ms)..=series.bucket_of(to_ms) {
            key.2 = b;
            if let Some(bucket) = metrics.get(&key).filter(|b| b.expires_at_ms > to_ms) {
                fields::add_bucket(&mut totals, bucket.fields.iter().map(|(k, v)| (k.as_str(), *v)));
            }
        }
        Ok(totals)
    }

    async fn record_health(&self, flag: &str, point: &HealthPoint) -> StoreResult<()> {
        if let Some(entry) = self.lock().entries.get_mut(flag) {
            if entry.health.back().is_some_and(|last| last.stage_version != point.stage_version) {
                entry.health.clear();
            }
            entry.health.push_back(point.clone());
            thin(&mut entry.health, GUARD_HISTORY_CAP);
        }
        Ok(())
    }

    async fn health_history(&self, flag: &str) -> StoreResult<Vec<HealthPoint>> {
        Ok(self.lock().entries.get(flag).map(|e| e.health.iter().cloned().collect()).unwrap_or_default())
    }
}

/// Applies `updates` to the series' bucket of `now_ms`, which then expires a series' TTL after `now_ms`.
fn update_bucket(
    metrics: &mut Buckets,
    flag: &str,
    series: &MetricSeries,
    now_ms: i64,
    updates: impl IntoIterator<Item = Update>,
) {
    let ttl_ms = i64::try_from(series.ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let bucket = metrics
        .entry((flag.to_owned(), series.id.clone(), series.bucket_of(now_ms)))
        .or_insert_with(|| Bucket { fields: HashMap::new(), expires_at_ms: 0 });
    bucket.expires_at_ms = now_ms.saturating_add(ttl_ms);
    for update in updates {
        update.apply_to(&mut bucket.fields);
    }
}

#[async_trait]
impl Coordination for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn try_lead(&self, holder: &str, ttl: Duration) -> StoreResult<bool> {
        let mut lease = locked(&self.lease);
        let now = Instant::now();
        match lease.as_ref() {
            Some((current, until)) if current != holder && *until > now => Ok(false),
            _ => {
                *lease = Some((holder.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn resign(&self, holder: &str) -> StoreResult<()> {
        let mut lease = locked(&self.lease);
        if lease.as_ref().is_some_and(|(current, _)| current == holder) {
            *lease = None;
        }
        Ok(())
    }

    async fn leader(&self) -> StoreResult<Option<String>> {
        Ok(locked(&self.lease).as_ref().filter(|(_, until)| *until > Instant::now()).map(|(h, _)| h.clone()))
    }

    async fn remember_once(&self, key: &str, ttl: Duration) -> StoreResult<bool> {
        let mut seen = locked(&self.seen);
        let now = Instant::now();
        if seen.len() > 100_000 {
            seen.retain(|_, until| *until > now);
        }
        match seen.get(key) {
            Some(until) if *until > now => Ok(false),
            _ => {
                seen.insert(key.to_owned(), now + ttl);
                Ok(true)
            }
        }
    }

    async fn forget(&self, key: &str) -> StoreResult<()> {
        locked(&self.seen).remove(key);
        Ok(())
    }

    /// The process's own clock is the only one there is: nothing to compare it with.
    async fn time_ms(&self) -> StoreResult<Option<i64>> {
        Ok(None)
    }

    async fn put_setting(&self, name: &str, value: Option<&str>) -> StoreResult<()> {
        let mut settings = locked(&self.settings);
        match value {
            Some(value) => settings.insert(name.to_owned(), value.to_owned()),
            None => settings.remove(name),
        };
        Ok(())
    }

    async fn setting(&self, name: &str) -> StoreResult<Option<String>> {
        Ok(locked(&self.settings).get(name).cloned())
    }

    async fn put_check_run(&self, flag: &str, check: &str, run: &str) -> StoreResult<()> {
        locked(&self.check_runs).entry(flag.to_owned()).or_default().insert(check.to_owned(), run.to_owned());
        Ok(())
    }

    async fn check_runs(&self, flag: &str) -> StoreResult<Vec<(String, String)>> {
        Ok(locked(&self.check_runs).get(flag).map(|runs| runs.clone().into_iter().collect()).unwrap_or_default())
    }
}
