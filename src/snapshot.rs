//! The in-process copy of every flag that the hot path reads, kept fresh by the change feed.
//!
//! Evaluations never touch the store: they look a flag up here, hash and compare. A feed task
//! applies change messages one at a time (so reads of the store are never applied out of order)
//! and re-reads everything periodically to repair missed messages. If the store is unreachable the
//! snapshot keeps serving what it has (fail-static) and readiness reports why.
//!
//! A full re-read never drops a flag just because the store came back without it: each read
//! carries the store's generation, which changes only when the store lost its data. A flag missing
//! from a read of the generation the snapshot knows was deleted, and goes; one missing after the
//! generation changed was lost, and stays (an *orphan*) — served as before — until the leader
//! writes it back (see [`crate::controller`]) or a delete of it comes through the change feed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::watch;

use crate::domain::bucket;
use crate::domain::rollout::{Evaluation, Flag, evaluate};
use crate::store::{Catalog, Store, StoreError};

/// A flag prepared for evaluation: what the hot path needs, computed once per change.
#[derive(Debug)]
pub struct FlagView {
    pub flag: Flag,
    pub percent: u8,
    pub internal_enabled: bool,
    internal: HashSet<String>,
    /// `{"flag":<name>,"user":` — the answer's JSON up to the user.
    json_head: Box<[u8]>,
    /// `,"percent":…,"stage":…,"status":…,"version":…,"reason":"` — the per-flag middle.
    json_tail: Box<[u8]>,
}

/// One user's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub evaluation: Evaluation,
    pub bucket: u8,
    pub is_internal: bool,
}

/// Appends `text` as a JSON string, escaped exactly as `serde_json` escapes it.
fn push_json_str(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

impl FlagView {
    pub fn new(flag: Flag) -> Self {
        let percent = flag.percent();
        let mut json_head = b"{\"flag\":".to_vec();
        push_json_str(&mut json_head, &flag.name);
        json_head.extend_from_slice(b",\"user\":");
        let mut json_tail = format!(",\"percent\":{percent},\"stage\":").into_bytes();
        push_json_str(&mut json_tail, flag.stage_name());
        json_tail.extend_from_slice(b",\"status\":");
        push_json_str(&mut json_tail, flag.state.status.as_str());
        json_tail.extend_from_slice(format!(",\"version\":{},\"reason\":\"", flag.state.version).as_bytes());
        Self {
            percent,
            internal_enabled: flag.internal_enabled(),
            internal: flag.definition.internal_users.iter().cloned().collect(),
            json_head: json_head.into(),
            json_tail: json_tail.into(),
            flag,
        }
    }

    pub fn evaluate(&self, user: &str) -> Answer {
        let bucket = bucket::user_bucket(self.flag.definition.salt.as_deref(), user);
        let is_internal = !self.internal.is_empty() && self.internal.contains(user);
        Answer { evaluation: evaluate(self.percent, self.internal_enabled, is_internal, bucket), bucket, is_internal }
    }

    /// The answer of `GET /flags/{flag}/users/{user}` as JSON:
    /// `{"flag","user","enabled","bucket","percent","stage","status","version","reason"}`.
    /// Only the user, the outcome and the bucket vary per request; the rest was rendered with the view.
    pub fn answer_json(&self, user: &str, answer: &Answer) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.json_head.len() + self.json_tail.len() + user.len() + 64);
        out.extend_from_slice(&self.json_head);
        push_json_str(&mut out, user);
        out.extend_from_slice(if answer.evaluation.enabled { b",\"enabled\":true" } else { b",\"enabled\":false" });
        out.extend_from_slice(b",\"bucket\":");
        let b = answer.bucket;
        if b >= 100 {
            out.push(b'0' + b / 100);
        }
        if b >= 10 {
            out.push(b'0' + b / 10 % 10);
        }
        out.push(b'0' + b % 10);
        out.extend_from_slice(&self.json_tail);
        out.extend_from_slice(answer.evaluation.reason.as_str().as_bytes());
        out.extend_from_slice(b"\"}");
        out
    }

    /// Whether `other` should replace this view: another incarnation of the flag, or a newer version.
    fn superseded_by(&self, other: &Flag) -> bool {
        other.state.created_at != self.flag.state.created_at || other.state.version >= self.flag.state.version
    }
}

/// The flags, and which of them the store lost (kept from before, waiting to be restored).
#[derive(Default)]
struct Flags {
    by_name: HashMap<String, Arc<FlagView>>,
    orphans: HashSet<String>,
}

pub struct Snapshot {
    flags: RwLock<Flags>,
    /// The store generation of the last full read (`None` before the first).
    generation: Mutex<Option<String>>,
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
            flags: RwLock::new(Flags::default()),
            generation: Mutex::new(None),
            store_ok: AtomicBool::new(false),
            last_sync: Mutex::new(None),
            last_error: Mutex::new(Some("the first read of the store has not completed".into())),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<FlagView>> {
        self.read().by_name.get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<FlagView>> {
        let mut flags: Vec<_> = self.read().by_name.values().cloned().collect();
        flags.sort_by(|a, b| a.flag.name.cmp(&b.flag.name));
        flags
    }

    /// Flags the store lost that this snapshot still serves, by name.
    pub fn orphans(&self) -> Vec<Arc<FlagView>> {
        let flags = self.read();
        let mut lost: Vec<_> = flags.orphans.iter().filter_map(|n| flags.by_name.get(n).cloned()).collect();
        lost.sort_by(|a, b| a.flag.name.cmp(&b.flag.name));
        lost
    }

    pub fn is_orphan(&self, name: &str) -> bool {
        self.read().orphans.contains(name)
    }

    pub fn len(&self) -> usize {
        self.read().by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a flag just read from or written to the store, unless the snapshot already holds a newer one.
    pub fn upsert(&self, flag: Flag) {
        let mut flags = self.write();
        // The store has it (again): no longer an orphan, whichever copy is newer.
        flags.orphans.remove(&flag.name);
        if flags.by_name.get(&flag.name).is_none_or(|v| v.superseded_by(&flag)) {
            flags.by_name.insert(flag.name.clone(), Arc::new(FlagView::new(flag)));
        }
    }

    /// Drops a flag (deleted); true when the snapshot had it.
    pub fn remove(&self, name: &str) -> bool {
        let mut flags = self.write();
        flags.orphans.remove(name);
        flags.by_name.remove(name).is_some()
    }

    /// Takes a full read of the store. Flags missing from it go when the store's generation is the
    /// one last seen (they were deleted); after a change of generation (the store lost its data)
    /// they stay as orphans, as do orphans still missing. Returns how many flags are orphans now.
    pub fn replace_all(&self, catalog: Catalog) -> usize {
        let mut known = self.generation.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let same_store = known.as_ref().is_none_or(|g| *g == catalog.generation);
        let mut flags = self.write();
        let mut next = HashMap::with_capacity(catalog.flags.len());
        for flag in catalog.flags {
            let view = match flags.by_name.get(&flag.name) {
                Some(v) if !v.superseded_by(&flag) => Arc::clone(v),
                _ => Arc::new(FlagView::new(flag)),
            };
            next.insert(view.flag.name.clone(), view);
        }
        let mut orphans = HashSet::new();
        for (name, view) in &flags.by_name {
            if !next.contains_key(name) && (!same_store || flags.orphans.contains(name)) {
                orphans.insert(name.clone());
                next.insert(name.clone(), Arc::clone(view));
            }
        }
        let lost = orphans.len();
        if lost > flags.orphans.len() {
            tracing::warn!(
                lost,
                generation = %catalog.generation,
                "the store came back without flags this replica serves; serving them from the snapshot until the leader restores them"
            );
        }
        *flags = Flags { by_name: next, orphans };
        *known = Some(catalog.generation);
        lost
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Flags> {
        // Writers replace whole entries, so a poisoned map is still consistent.
        self.flags.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Flags> {
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
        self.read().by_name.values().fold(0u64, |acc, v| {
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
    match store.load_all().await {
        Ok(catalog) => {
            snapshot.replace_all(catalog);
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
                        Ok(None) => {
                            snapshot.remove(&change.flag);
                        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::plan::FlagDefinition;

    fn flag(name: &str, version: u64) -> Flag {
        let mut flag = Flag::new(name.into(), FlagDefinition::default(), 1);
        flag.state.version = version;
        flag
    }

    fn catalog(generation: &str, flags: &[Flag]) -> Catalog {
        Catalog { generation: generation.into(), flags: flags.to_vec() }
    }

    fn names(snapshot: &Snapshot) -> Vec<String> {
        snapshot.all().iter().map(|v| v.flag.name.clone()).collect()
    }

    #[test]
    fn a_flag_missing_from_the_same_store_was_deleted_and_goes() {
        let s = Snapshot::new();
        assert_eq!(s.replace_all(catalog("g1", &[flag("a", 1), flag("b", 1)])), 0);
        assert_eq!(s.replace_all(catalog("g1", &[flag("a", 1)])), 0);
        assert_eq!(names(&s), ["a"]);
    }

    #[test]
    fn flags_missing_after_the_store_lost_its_data_stay_until_restored_or_deleted() {
        let s = Snapshot::new();
        s.replace_all(catalog("g1", &[flag("a", 3), flag("b", 5), flag("c", 2)]));
        // Redis came back empty: a new generation, nothing in it.
        assert_eq!(s.replace_all(catalog("g2", &[])), 3);
        assert_eq!(names(&s), ["a", "b", "c"]);
        assert_eq!(s.get("b").map(|v| v.flag.state.version), Some(5), "served as before");
        // Later reads of the new generation keep the orphans too.
        assert_eq!(s.replace_all(catalog("g2", &[])), 3);
        // The leader restored `a` (version + 1): no longer an orphan.
        s.upsert(flag("a", 4));
        assert!(!s.is_orphan("a"));
        // `b` was deleted through the API: the feed's deletion removes it.
        assert!(s.remove("b"));
        assert_eq!(s.replace_all(catalog("g2", &[flag("a", 4)])), 1);
        assert_eq!(names(&s), ["a", "c"]);
        assert_eq!(s.orphans().iter().map(|v| v.flag.name.clone()).collect::<Vec<_>>(), ["c"]);
        // Restored by the leader: back to normal, and a later deletion in the same store goes.
        assert_eq!(s.replace_all(catalog("g2", &[flag("a", 4), flag("c", 3)])), 0);
        assert_eq!(s.replace_all(catalog("g2", &[flag("c", 3)])), 0);
        assert_eq!(names(&s), ["c"]);
    }
}
