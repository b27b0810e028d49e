//! The in-process copy of every flag that the hot path reads, kept fresh by the change feed.
//!
//! Evaluations never touch the store: they look a flag up here, hash and compare. A feed task
//! applies change messages one at a time (so reads of the store are never applied out of order)
//! and re-reads everything periodically to repair missed messages. If the store is unreachable the
//! snapshot keeps serving what it has (fail-static) and readiness reports why.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::watch;

use crate::domain::bucket;
use crate::domain::rollout::{Evaluation, Flag, evaluate};
use crate::store::{Store, StoreError};

/// A flag prepared for evaluation: what the hot path needs, computed once per change.
#[derive(Debug)]
pub struct FlagView {
    pub flag: Flag,
    pub percent: u8,
    pub internal_enabled: bool,
    internal: HashSet<String>,
}

/// One user's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub evaluation: Evaluation,
    pub bucket: u8,
    pub is_internal: bool,
}

impl FlagView {
    pub fn new(flag: Flag) -> Self {
        Self {
            percent: flag.percent(),
            internal_enabled: flag.internal_enabled(),
            internal: flag.definition.internal_users.iter().cloned().collect(),
            flag,
        }
    }

    pub fn evaluate(&self, user: &str) -> Answer {
        let bucket = bucket::user_bucket(self.flag.definition.salt.as_deref(), user);
        let is_internal = self.internal.contains(user);
        Answer { evaluation: evaluate(self.percent, self.internal_enabled, is_internal, bucket), bucket, is_internal }
    }

    /// Whether `other` should replace this view: another incarnation of the flag, or a newer version.
    fn superseded_by(&self, other: &Flag) -> bool {
        other.state.created_at != self.flag.state.created_at || other.state.version >= self.flag.state.version
    }
}

pub struct Snapshot {
    flags: RwLock<HashMap<String, Arc<FlagView>>>,
    store_ok: AtomicBool,
    /// Wall time of the last full re-read (real time, not the injected clock: readiness is operational).
    last_sync: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self::new()
    }
}

impl Snapshot {
    pub fn new() -> Self {
        Self {
            flags: RwLock::new(HashMap::new()),
            store_ok: AtomicBool::new(false),
            last_sync: Mutex::new(None),
            last_error: Mutex::new(Some("the first read of the store has not completed".into())),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<FlagView>> {
        self.read().get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<FlagView>> {
        let mut flags: Vec<_> = self.read().values().cloned().collect();
        flags.sort_by(|a, b| a.flag.name.cmp(&b.flag.name));
        flags
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a flag just read from or written to the store, unless the snapshot already holds a newer one.
    pub fn upsert(&self, flag: Flag) {
        let mut flags = self.write();
        if flags.get(&flag.name).is_none_or(|v| v.superseded_by(&flag)) {
            flags.insert(flag.name.clone(), Arc::new(FlagView::new(flag)));
        }
    }

    pub fn remove(&self, name: &str) {
        self.write().remove(name);
    }

    /// Replaces the whole snapshot with a full read of the store.
    pub fn replace_all(&self, all: Vec<Flag>) {
        let mut next = HashMap::with_capacity(all.len());
        let current = self.read().clone();
        for flag in all {
            let view = match current.get(&flag.name) {
                Some(v) if !v.superseded_by(&flag) => Arc::clone(v),
                _ => Arc::new(FlagView::new(flag)),
            };
            next.insert(view.flag.name.clone(), view);
        }
        *self.write() = next;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<FlagView>>> {
        // Writers replace whole entries, so a poisoned map is still consistent.
        self.flags.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<FlagView>>> {
        self.flags.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mark_ok(&self) {
        self.store_ok.store(true, Ordering::SeqCst);
        *self.last_sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn mark_failed(&self, why: String) {
        if self.store_ok.swap(false, Ordering::SeqCst) {
            tracing::warn!(error = %why, "store unreachable; serving the last snapshot");
        }
        *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
    }

    /// `Ok` when the store answers and the snapshot was fully re-read recently, else the reason.
    pub fn readiness(&self, max_age: Duration) -> Result<(), String> {
        if let Some(why) = self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            return Err(why);
        }
        match *self.last_sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Some(at) if at.elapsed() <= max_age => Ok(()),
            Some(at) => Err(format!("the snapshot was last refreshed {} ms ago", at.elapsed().as_millis())),
            None => Err("the snapshot was never loaded".into()),
        }
    }

    pub fn store_ok(&self) -> bool {
        self.store_ok.load(Ordering::SeqCst)
    }

    /// Sum of versions: changes whenever any flag changes (for cheap ETags).
    pub fn fingerprint(&self) -> u64 {
        self.read().values().fold(0u64, |acc, v| {
            acc.wrapping_mul(31).wrapping_add(v.flag.state.version ^ (v.flag.state.created_at as u64))
        })
    }
}

fn describe(e: &StoreError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn full_reload(store: &dyn Store, snapshot: &Snapshot) -> bool {
    match store.list_flags().await {
        Ok(all) => {
            snapshot.replace_all(all);
            snapshot.mark_ok();
            true
        }
        Err(e) => {
            snapshot.mark_failed(describe(&e));
            false
        }
    }
}

/// Keeps `snapshot` in step with `store` until `shutdown` flips to true.
pub async fn run_feed(
    store: Arc<dyn Store>,
    snapshot: Arc<Snapshot>,
    resync_every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let retry = Duration::from_millis(250);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut changes = match store.subscribe().await {
            Ok(stream) => stream,
            Err(e) => {
                snapshot.mark_failed(describe(&e));
                tokio::select! {
                    _ = tokio::time::sleep(retry) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        // Subscribed first, then read everything: no change can fall between the two.
        if !full_reload(store.as_ref(), &snapshot).await {
            tokio::select! {
                _ = tokio::time::sleep(retry) => continue,
                _ = shutdown.changed() => return,
            }
        }
        let mut resync = tokio::time::interval(resync_every);
        resync.tick().await;
        loop {
            tokio::select! {
                change = changes.next() => match change {
                    Some(change) => match store.get_flag(&change.flag).await {
                        Ok(Some(flag)) => snapshot.upsert(flag),
                        Ok(None) => snapshot.remove(&change.flag),
                        Err(e) => {
                            snapshot.mark_failed(describe(&e));
                            break;
                        }
                    },
                    None => {
                        snapshot.mark_failed("the change feed subscription was lost".into());
                        break;
                    }
                },
                _ = resync.tick() => {
                    if !full_reload(store.as_ref(), &snapshot).await {
                        break;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.changed() => return,
        }
    }
}
