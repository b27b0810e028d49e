//! The in-process copy of every flag that the hot path reads, kept fresh by the change feed.
//!
//! Evaluations never touch the store: they look a flag up here, hash and compare. A feed task
//! applies change messages one at a time (so reads of the store are never applied out of order)
//! and re-reads everything periodically to repair missed messages: every flag's version first,
//! then the documents of only those that differ, so a resync that finds nothing new allocates and
//! rebuilds nothing. If the store is unreachable the snapshot keeps serving what it has
//! (fail-static) and readiness reports why.
//!
//! A full re-read never drops a flag just because the store came back without it: each read
//! carries the store's generation, which changes only when the store lost its data. A flag missing
//! from a read of the generation the snapshot knows was deleted, and goes; one missing after the
//! generation changed was lost, and stays (an *orphan*) — served as before — until the leader
//! writes it back (see [`crate::controller`]) or a delete of it comes through the change feed.
//!
//! Every change the snapshot takes (a flag added, replaced or dropped) is also published to the
//! clients that follow this replica (`GET /stream`): a numbered [`ChangeEvent`] on a broadcast
//! channel, with the latest ones kept for a client resuming after a reconnection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, watch};

use crate::domain::bucket;
use crate::domain::rollout::{Evaluation, Flag, evaluate};
use crate::store::{Catalog, Change, Stamp, Store, StoreError};
use crate::util::{self, error_chain, lock};

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
    /// The flag's [`FlagConfig`] as JSON, shared by every client that is sent it.
    config_json: Bytes,
}

/// A flag's evaluation configuration for clients that evaluate locally (`GET /flags/config`,
/// `GET /stream`): internal users only as SHA-256 digests of their ids, so no address is published.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FlagConfig<'a> {
    pub name: &'a str,
    pub version: u64,
    /// `pending`, `scheduled`, `running`, `paused`, `rolled_back` or `completed`.
    pub status: &'static str,
    pub stage: &'a str,
    /// What the service evaluates with: 0 while pending, scheduled or rolled back.
    pub percent: u8,
    /// Bucketing salt: the hashed key is `{salt}:{user}` with one, the user id without.
    pub salt: Option<&'a str>,
    /// Lowercase hex SHA-256 of each internal user's id (UTF-8).
    pub internal_users_sha256: Vec<String>,
}

/// The JSON of [`FlagConfig`] for `flag` evaluated at `percent`.
fn config_json(flag: &Flag, percent: u8) -> Bytes {
    let config = FlagConfig {
        name: &flag.name,
        version: flag.state.version,
        status: flag.state.status.as_str(),
        stage: flag.stage_name(),
        percent,
        salt: flag.definition.salt.as_deref(),
        internal_users_sha256: flag.definition.internal_users.iter().map(|u| hex::encode(Sha256::digest(u))).collect(),
    };
    // Plain strings and numbers: serializing cannot fail.
    serde_json::to_vec(&config).unwrap_or_default().into()
}

/// `{"flags": [FlagConfig, …]}` of `views` (in their order): the body of `GET /flags/config` and
/// of the stream's snapshot event.
pub fn config_body(views: &[Arc<FlagView>]) -> Bytes {
    let mut out = Vec::with_capacity(views.iter().map(|v| v.config_json.len() + 1).sum::<usize>() + 12);
    out.extend_from_slice(b"{\"flags\":[");
    for (i, view) in views.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&view.config_json);
    }
    out.extend_from_slice(b"]}");
    out.into()
}

/// An ETag of what `views` answer (for `user`, when the answer is one user's): a SHA-256 of the
/// user and each flag's name, incarnation (creation time) and version, in name order. Every
/// replica holding the same flags gives the same tag whatever the order it holds them in, so
/// `If-None-Match` works behind a load balancer; any change to any flag (a version), or a flag
/// deleted or re-created, changes it.
pub fn etag(views: &[Arc<FlagView>], user: Option<&str>) -> String {
    let mut flags: Vec<(&str, i64, u64)> =
        views.iter().map(|v| (v.flag.name.as_str(), v.flag.state.created_at, v.flag.state.version)).collect();
    flags.sort_unstable();
    let mut hash = Sha256::new();
    // Lengths first: no two different inputs read as the same bytes.
    if let Some(user) = user {
        hash.update((user.len() as u64).to_be_bytes());
        hash.update(user.as_bytes());
    }
    for (name, created_at, version) in flags {
        hash.update((name.len() as u64).to_be_bytes());
        hash.update(name.as_bytes());
        hash.update(created_at.to_be_bytes());
        hash.update(version.to_be_bytes());
    }
    format!("\"{}\"", hex::encode(&hash.finalize()[..16]))
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
            config_json: config_json(&flag, percent),
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

    /// Whether the store's `stamp` says this view is out of date (another incarnation, a newer
    /// version, or the store cannot tell).
    fn outdated_by(&self, stamp: &Stamp) -> bool {
        stamp.created_at != Some(self.flag.state.created_at) || stamp.version > self.flag.state.version
    }
}

/// Whether `a` and `b` are the same version of the same incarnation of a flag.
fn same_version(a: &Flag, b: &Flag) -> bool {
    a.state.version == b.state.version && a.state.created_at == b.state.created_at
}

/// Flags by name, hashed with foldhash: every evaluation looks a name up, and SipHash took ~200
/// of the ~3,900 instructions an evaluation adds to a request (callgrind). Names come from
/// operators, so the hash needs no stronger flooding resistance than foldhash's per-process seed.
type ByName = HashMap<String, Arc<FlagView>, foldhash::fast::RandomState>;

/// The flags, and which of them the store lost (kept from before, waiting to be restored).
#[derive(Default)]
struct Flags {
    by_name: ByName,
    orphans: HashSet<String>,
    /// Flags the store's index listed without the flag at the last full read, kept meanwhile.
    missing: HashSet<String>,
}

/// One change of the snapshot as clients are told it: its number on this replica and the flag's
/// [`FlagConfig`] JSON, or `{"name":…,"deleted":true}` for a flag that is gone.
#[derive(Debug, Clone)]
pub struct ChangeEvent {
    pub seq: u64,
    pub json: Bytes,
}

/// How many of the latest changes a replica keeps for clients resuming with `Last-Event-ID`.
const REPLAY_EVENTS: usize = 1024;

/// How many changes a follower may fall behind by default before it is dropped.
pub const DEFAULT_FOLLOWER_BUFFER: usize = 1024;

/// The numbered changes: the latest kept for resuming, every one sent to the followers.
struct ChangeLog {
    last_seq: u64,
    /// Events numbered above this are all in `recent`.
    floor: u64,
    recent: VecDeque<ChangeEvent>,
    followers: broadcast::Sender<ChangeEvent>,
}

impl ChangeLog {
    fn new(buffer: usize) -> Self {
        // A random start in the high half (below 2^53, exact in JavaScript numbers): an id another
        // replica gave, or this one before a restart, is almost never mistaken for one of ours.
        let start = u64::from(getrandom::u32().unwrap_or(0) & 0xf_ffff) << 32;
        let (followers, _) = broadcast::channel(buffer.max(1));
        Self { last_seq: start, floor: start, recent: VecDeque::with_capacity(REPLAY_EVENTS), followers }
    }

    fn publish(&mut self, json: Bytes) {
        self.last_seq += 1;
        let event = ChangeEvent { seq: self.last_seq, json };
        if self.recent.len() == REPLAY_EVENTS
            && let Some(oldest) = self.recent.pop_front()
        {
            self.floor = oldest.seq;
        }
        self.recent.push_back(event.clone());
        // No follower is no error: nobody is listening.
        let _ = self.followers.send(event);
    }

    /// The events after `seq`, when every one of them is still held.
    fn since(&self, seq: u64) -> Option<Vec<ChangeEvent>> {
        (self.floor..=self.last_seq)
            .contains(&seq)
            .then(|| self.recent.iter().filter(|e| e.seq > seq).cloned().collect())
    }
}

fn deleted_json(name: &str) -> Bytes {
    let mut out = b"{\"name\":".to_vec();
    push_json_str(&mut out, name);
    out.extend_from_slice(b",\"deleted\":true}");
    out.into()
}

/// Where a follower starts: the whole configuration as of change `seq`, or the changes it missed.
pub enum Start {
    Snapshot { seq: u64, views: Vec<Arc<FlagView>> },
    Replay(Vec<ChangeEvent>),
}

/// A follower of the snapshot's changes: where it starts, and every change after that.
pub struct Follower {
    pub start: Start,
    pub changes: broadcast::Receiver<ChangeEvent>,
}

pub struct Snapshot {
    flags: RwLock<Flags>,
    /// Locked only while `flags` is: every change is numbered in the order it is applied.
    changes: Mutex<ChangeLog>,
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
        Self::with_follower_buffer(DEFAULT_FOLLOWER_BUFFER)
    }

    /// A snapshot whose followers are dropped once they fall `buffer` changes behind.
    pub fn with_follower_buffer(buffer: usize) -> Self {
        Self {
            flags: RwLock::new(Flags::default()),
            changes: Mutex::new(ChangeLog::new(buffer)),
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

    /// A new follower of the changes: with `after` (the last change it saw), the changes since
    /// then when this replica still holds them all; otherwise the whole configuration. Taken under
    /// the read lock, so no change falls between the start and the first change received.
    pub fn follow(&self, after: Option<u64>) -> Follower {
        let flags = self.read();
        let log = lock(&self.changes);
        let changes = log.followers.subscribe();
        let start = match after.and_then(|seq| log.since(seq)) {
            Some(missed) => Start::Replay(missed),
            None => {
                let mut views: Vec<_> = flags.by_name.values().cloned().collect();
                views.sort_by(|a, b| a.flag.name.cmp(&b.flag.name));
                Start::Snapshot { seq: log.last_seq, views }
            }
        };
        Follower { start, changes }
    }

    /// Numbers and sends a change; called with the write lock held.
    fn publish(&self, json: Bytes) {
        lock(&self.changes).publish(json);
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
        flags.missing.remove(&flag.name);
        let held = flags.by_name.get(&flag.name);
        if held.is_none_or(|v| v.superseded_by(&flag)) {
            // The same version read back (the feed after this replica's own write) is no change.
            let changed = held.is_none_or(|v| !same_version(&v.flag, &flag));
            let view = Arc::new(FlagView::new(flag));
            if changed {
                self.publish(view.config_json.clone());
            }
            flags.by_name.insert(view.flag.name.clone(), view);
        }
    }

    /// Drops a flag (deleted); true when the snapshot had it.
    pub fn remove(&self, name: &str) -> bool {
        let mut flags = self.write();
        flags.orphans.remove(name);
        flags.missing.remove(name);
        let removed = flags.by_name.remove(name).is_some();
        if removed {
            self.publish(deleted_json(name));
        }
        removed
    }

    /// The flags of a full read of the store that this snapshot must fetch: new or outdated.
    pub fn outdated(&self, stamps: &[Stamp]) -> Vec<String> {
        let flags = self.read();
        stamps
            .iter()
            .filter(|stamp| flags.by_name.get(&stamp.name).is_none_or(|v| v.outdated_by(stamp)))
            .map(|stamp| stamp.name.clone())
            .collect()
    }

    /// Takes a full read of the store: `catalog` stamps every flag it holds, `fresh` holds the ones
    /// fetched because [`Self::outdated`] named them. Current views are kept as they are. Flags
    /// missing from the read go when the store's generation is the one last seen (they were
    /// deleted); after a change of generation (the store lost its data) they stay as orphans, as do
    /// orphans still missing. A flag the index still lists without the flag itself is kept; listed
    /// so at two reads in a row it was lost (a cluster node came back empty) and becomes an orphan,
    /// for the leader to write back (a deletion or creation in flight takes microseconds, and a
    /// deletion's change message drops the flag first). When nothing changed, nothing is rebuilt.
    /// Returns how many flags are orphans now.
    pub fn sync(&self, catalog: Catalog, fresh: Vec<Flag>) -> usize {
        let Catalog { generation, stamps, missing } = catalog;
        let mut known = lock(&self.generation);
        let same_store = known.as_ref().is_none_or(|g| *g == generation);
        {
            let flags = self.read();
            if same_store
                && fresh.is_empty()
                && missing.is_empty()
                && flags.orphans.is_empty()
                && flags.missing.is_empty()
                && stamps.len() == flags.by_name.len()
                && stamps.iter().all(|s| flags.by_name.get(&s.name).is_some_and(|v| !v.outdated_by(s)))
            {
                *known = Some(generation);
                return 0;
            }
        }
        let mut fresh: HashMap<String, Flag> = fresh.into_iter().map(|f| (f.name.clone(), f)).collect();
        let mut flags = self.write();
        let mut next = ByName::with_capacity_and_hasher(stamps.len(), foldhash::fast::RandomState::default());
        for stamp in stamps {
            let view = match (flags.by_name.get(&stamp.name), fresh.remove(&stamp.name)) {
                (Some(v), Some(flag)) if !v.superseded_by(&flag) => Arc::clone(v),
                (_, Some(flag)) => Arc::new(FlagView::new(flag)),
                (Some(v), None) if !v.outdated_by(&stamp) => Arc::clone(v),
                // Outdated but not fetched: gone between the two reads.
                _ => continue,
            };
            next.insert(stamp.name, view);
        }
        let mut orphans = HashSet::new();
        let mut still_missing = HashSet::new();
        for name in missing {
            let Some(view) = flags.by_name.get(&name) else { continue };
            if !same_store || flags.missing.contains(&name) || flags.orphans.contains(&name) {
                orphans.insert(name.clone());
            } else {
                still_missing.insert(name.clone());
            }
            next.insert(name, Arc::clone(view));
        }
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
                generation = %generation,
                "the store came back without flags this replica serves; serving them from the snapshot until the leader restores them"
            );
        }
        self.publish_differences(&flags.by_name, &next);
        *flags = Flags { by_name: next, orphans, missing: still_missing };
        *known = Some(generation);
        lost
    }

    /// Publishes what differs from `before` in `after`: flags added or at another version, then
    /// flags dropped.
    fn publish_differences(&self, before: &ByName, after: &ByName) {
        let mut changed: Vec<&Arc<FlagView>> = after
            .iter()
            .filter(|(n, v)| before.get(*n).is_none_or(|old| !Arc::ptr_eq(old, v)))
            .map(|(_, v)| v)
            .collect();
        changed.sort_by(|a, b| a.flag.name.cmp(&b.flag.name));
        for view in changed {
            self.publish(view.config_json.clone());
        }
        let mut dropped: Vec<&String> = before.keys().filter(|n| !after.contains_key(*n)).collect();
        dropped.sort();
        for name in dropped {
            self.publish(deleted_json(name));
        }
    }

    /// Takes every flag of a store of `generation` at once (what [`Self::sync`] does after fetching
    /// them all).
    pub fn replace_all(&self, generation: &str, all: Vec<Flag>) -> usize {
        let stamps = all
            .iter()
            .map(|f| Stamp { name: f.name.clone(), version: f.state.version, created_at: Some(f.state.created_at) })
            .collect();
        self.sync(Catalog { generation: generation.to_owned(), stamps, missing: Vec::new() }, all)
    }

    fn read(&self) -> RwLockReadGuard<'_, Flags> {
        // Writers replace whole entries, so a poisoned map is still consistent.
        util::read(&self.flags)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Flags> {
        util::write(&self.flags)
    }

    fn mark_ok(&self) {
        self.store_ok.store(true, Ordering::SeqCst);
        *lock(&self.last_sync) = Some(Instant::now());
        *lock(&self.last_error) = None;
    }

    fn mark_failed(&self, why: String) {
        if self.store_ok.swap(false, Ordering::SeqCst) {
            tracing::warn!(error = %why, "store unreachable; serving the last snapshot");
        }
        *lock(&self.last_error) = Some(why);
    }

    /// `Ok` when the store answers and the snapshot was fully re-read recently, else the reason.
    pub fn readiness(&self, max_age: Duration) -> Result<(), String> {
        if let Some(why) = lock(&self.last_error).clone() {
            return Err(why);
        }
        match *lock(&self.last_sync) {
            Some(at) if at.elapsed() <= max_age => Ok(()),
            Some(at) => Err(format!("the snapshot was last refreshed {} ms ago", at.elapsed().as_millis())),
            None => Err("the snapshot was never loaded".into()),
        }
    }

    pub fn store_ok(&self) -> bool {
        self.store_ok.load(Ordering::SeqCst)
    }
}

/// How many times in a row a full read starts over because the store lost its data meanwhile.
const READ_ATTEMPTS: usize = 3;

/// Reads the store's stamps, then the flags this snapshot lacks or holds older, then the
/// generation again: a store that lost its data between the reads is read again rather than
/// having its flags filed under the wrong generation. A store that keeps losing it is reported
/// unavailable (the feed retries after its back-off).
async fn read_changes(store: &dyn Store, snapshot: &Snapshot) -> Result<(Catalog, Vec<Flag>), StoreError> {
    for _ in 0..READ_ATTEMPTS {
        let catalog = store.load_stamps().await?;
        let outdated = snapshot.outdated(&catalog.stamps);
        let fresh = if outdated.is_empty() { Vec::new() } else { store.get_flags(&outdated).await? };
        if store.generation().await?.as_deref() == Some(catalog.generation.as_str()) {
            return Ok((catalog, fresh));
        }
    }
    Err(StoreError::Unavailable(
        format!("the store lost its data during each of {READ_ATTEMPTS} full reads in a row").into(),
    ))
}

async fn full_reload(store: &dyn Store, snapshot: &Snapshot) -> bool {
    match read_changes(store, snapshot).await {
        Ok((catalog, fresh)) => {
            snapshot.sync(catalog, fresh);
            snapshot.mark_ok();
            true
        }
        Err(e) => {
            snapshot.mark_failed(error_chain(&e));
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
        let ended = match store.subscribe().await {
            Ok(changes) => follow(store.as_ref(), &snapshot, changes, resync_every, &mut shutdown).await,
            Err(e) => {
                snapshot.mark_failed(error_chain(&e));
                FeedEnd::Broken
            }
        };
        if ended == FeedEnd::Shutdown {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Why [`follow`] returned: the feed broke (subscribe again after a pause), or shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FeedEnd {
    Broken,
    Shutdown,
}

/// Reads everything once subscribed, then applies each change message and re-reads everything
/// every `resync_every`, until the store fails, the subscription ends or `shutdown` changes.
/// Most changes read back in one round trip.
const CHANGE_BATCH: usize = 1024;

/// The names of `first` and of every change already waiting (up to [`CHANGE_BATCH`]), without
/// duplicates; true when the subscription ended meanwhile.
fn drain_ready(first: Change, changes: &mut BoxStream<'static, Change>) -> (Vec<String>, bool) {
    use futures::FutureExt;
    let mut names = vec![first.flag];
    let mut lost = false;
    while names.len() < CHANGE_BATCH {
        match changes.next().now_or_never() {
            Some(Some(change)) => names.push(change.flag),
            Some(None) => {
                lost = true;
                break;
            }
            None => break,
        }
    }
    names.sort_unstable();
    names.dedup();
    (names, lost)
}

/// Re-reads the named flags in one read: present ones are taken, absent ones were deleted.
async fn apply_changes(store: &dyn Store, snapshot: &Snapshot, names: &[String]) -> Result<(), StoreError> {
    let flags = store.get_flags(names).await?;
    for name in names {
        if !flags.iter().any(|f| &f.name == name) {
            snapshot.remove(name);
        }
    }
    for flag in flags {
        snapshot.upsert(flag);
    }
    Ok(())
}

async fn follow(
    store: &dyn Store,
    snapshot: &Snapshot,
    mut changes: BoxStream<'static, Change>,
    resync_every: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> FeedEnd {
    // Subscribed first, then read everything: no change can fall between the two.
    if !full_reload(store, snapshot).await {
        return FeedEnd::Broken;
    }
    let mut resync = tokio::time::interval(resync_every);
    resync.tick().await;
    loop {
        tokio::select! {
            change = changes.next() => {
                let Some(change) = change else {
                    snapshot.mark_failed("the change feed subscription was lost".into());
                    return FeedEnd::Broken;
                };
                // A burst (an emergency stop, a bulk apply) is read back in one round trip.
                let (names, lost) = drain_ready(change, &mut changes);
                if let Err(e) = apply_changes(store, snapshot, &names).await {
                    snapshot.mark_failed(error_chain(&e));
                    return FeedEnd::Broken;
                }
                if lost {
                    snapshot.mark_failed("the change feed subscription was lost".into());
                    return FeedEnd::Broken;
                }
            },
            _ = resync.tick() => {
                if !full_reload(store, snapshot).await {
                    return FeedEnd::Broken;
                }
            }
            _ = shutdown.changed() => return FeedEnd::Shutdown,
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

    fn flag_at(name: &str, version: u64, created_at: i64) -> Flag {
        let mut flag = Flag::new(name.into(), FlagDefinition::default(), created_at);
        flag.state.version = version;
        flag
    }

    fn stamp(name: &str, version: u64, created_at: Option<i64>) -> Stamp {
        Stamp { name: name.into(), version, created_at }
    }

    fn names(snapshot: &Snapshot) -> Vec<String> {
        snapshot.all().iter().map(|v| v.flag.name.clone()).collect()
    }

    #[test]
    fn a_flag_missing_from_the_same_store_was_deleted_and_goes() {
        let s = Snapshot::new();
        assert_eq!(s.replace_all("g1", vec![flag("a", 1), flag("b", 1)]), 0);
        assert_eq!(s.replace_all("g1", vec![flag("a", 1)]), 0);
        assert_eq!(names(&s), ["a"]);
    }

    #[test]
    fn flags_missing_after_the_store_lost_its_data_stay_until_restored_or_deleted() {
        let s = Snapshot::new();
        s.replace_all("g1", vec![flag("a", 3), flag("b", 5), flag("c", 2)]);
        // Redis came back empty: a new generation, nothing in it.
        assert_eq!(s.replace_all("g2", vec![]), 3);
        assert_eq!(names(&s), ["a", "b", "c"]);
        assert_eq!(s.get("b").map(|v| v.flag.state.version), Some(5), "served as before");
        // Later reads of the new generation keep the orphans too.
        assert_eq!(s.replace_all("g2", vec![]), 3);
        // The leader restored `a` (version + 1): no longer an orphan.
        s.upsert(flag("a", 4));
        assert!(!s.is_orphan("a"));
        // `b` was deleted through the API: the feed's deletion removes it.
        assert!(s.remove("b"));
        assert_eq!(s.replace_all("g2", vec![flag("a", 4)]), 1);
        assert_eq!(names(&s), ["a", "c"]);
        assert_eq!(s.orphans().iter().map(|v| v.flag.name.clone()).collect::<Vec<_>>(), ["c"]);
        // Restored by the leader: back to normal, and a later deletion in the same store goes.
        assert_eq!(s.replace_all("g2", vec![flag("a", 4), flag("c", 3)]), 0);
        assert_eq!(s.replace_all("g2", vec![flag("c", 3)]), 0);
        assert_eq!(names(&s), ["c"]);
    }

    #[test]
    fn a_sync_fetches_and_replaces_only_what_changed() {
        let snapshot = Snapshot::new();
        snapshot.replace_all(
            "g1",
            vec![flag_at("same", 3, 1), flag_at("newer", 3, 1), flag_at("reborn", 3, 1), flag_at("gone", 1, 1)],
        );
        let kept = snapshot.get("same").expect("present");
        let stamps = vec![
            stamp("same", 3, Some(1)),
            stamp("newer", 4, Some(1)),
            stamp("reborn", 1, Some(2)),
            stamp("unknown-age", 1, None),
            stamp("added", 1, Some(5)),
        ];
        let mut outdated = snapshot.outdated(&stamps);
        outdated.sort();
        assert_eq!(outdated, ["added", "newer", "reborn", "unknown-age"]);

        // `unknown-age` was deleted between the two reads: it is not fetched, so not kept.
        let fresh = vec![flag_at("newer", 4, 1), flag_at("reborn", 1, 2), flag_at("added", 1, 5)];
        assert_eq!(snapshot.sync(Catalog { generation: "g1".into(), stamps, missing: Vec::new() }, fresh), 0);
        let version = |name: &str| snapshot.get(name).map(|v| (v.flag.state.version, v.flag.state.created_at));
        assert!(Arc::ptr_eq(&kept, &snapshot.get("same").expect("present")), "an unchanged view is reused");
        assert_eq!(version("newer"), Some((4, 1)));
        assert_eq!(version("reborn"), Some((1, 2)));
        assert_eq!(version("added"), Some((1, 5)));
        assert_eq!((version("gone"), version("unknown-age")), (None, None));
        assert_eq!(snapshot.len(), 4);

        // Nothing new: every view stays the very same.
        let stamps = ["same", "newer", "reborn", "added"]
            .iter()
            .filter_map(|n| snapshot.get(n))
            .map(|v| stamp(&v.flag.name, v.flag.state.version, Some(v.flag.state.created_at)))
            .collect::<Vec<_>>();
        assert!(snapshot.outdated(&stamps).is_empty());
        let before: Vec<_> = snapshot.all();
        snapshot.sync(Catalog { generation: "g1".into(), stamps, missing: Vec::new() }, Vec::new());
        assert!(before.iter().zip(snapshot.all()).all(|(a, b)| Arc::ptr_eq(a, &b)));
    }

    #[test]
    fn a_sync_never_goes_back_to_an_older_version() {
        let snapshot = Snapshot::new();
        snapshot.upsert(flag_at("f", 5, 1));
        // A write through this replica landed after the store was read.
        snapshot.sync(
            Catalog { generation: "g1".into(), stamps: vec![stamp("f", 4, Some(1))], missing: Vec::new() },
            Vec::new(),
        );
        assert_eq!(snapshot.get("f").map(|v| v.flag.state.version), Some(5));
    }

    #[test]
    fn a_sync_of_a_new_generation_keeps_what_its_stamps_lack_as_orphans() {
        let snapshot = Snapshot::new();
        snapshot.replace_all("g1", vec![flag_at("a", 2, 1), flag_at("b", 2, 1)]);
        // The store came back with only `a` (restored by another leader), at the same version.
        let lost = snapshot.sync(
            Catalog { generation: "g2".into(), stamps: vec![stamp("a", 2, Some(1))], missing: Vec::new() },
            Vec::new(),
        );
        assert_eq!(lost, 1);
        assert!(snapshot.is_orphan("b") && !snapshot.is_orphan("a"));
        assert_eq!(snapshot.len(), 2);
    }

    #[test]
    fn a_flag_listed_without_its_data_is_kept_and_after_two_reads_becomes_an_orphan() {
        let catalog = |stamps: Vec<Stamp>, missing: &[&str]| Catalog {
            generation: "g1".into(),
            stamps,
            missing: missing.iter().map(|m| (*m).to_owned()).collect(),
        };
        let s = Snapshot::new();
        s.replace_all("g1", vec![flag_at("a", 2, 1), flag_at("b", 3, 1), flag_at("d", 1, 1)]);
        // `b` is listed without its hash (its cluster node came back empty); `new` is being created.
        assert_eq!(s.sync(catalog(vec![stamp("a", 2, Some(1)), stamp("d", 1, Some(1))], &["b", "new"]), Vec::new()), 0);
        assert_eq!(s.get("b").map(|v| v.flag.state.version), Some(3), "served as before");
        assert!(!s.is_orphan("b") && s.get("new").is_none());
        // `d` is being deleted: its change message drops it first, the read after finds it listed.
        assert!(s.remove("d"));
        assert_eq!(s.sync(catalog(vec![stamp("a", 2, Some(1))], &["b", "d"]), Vec::new()), 1);
        assert!(s.is_orphan("b"), "listed without data twice: lost, for the leader to restore");
        assert!(s.get("d").is_none(), "a deleted flag does not come back");
        // Restored by the leader: an ordinary flag again.
        s.upsert(flag_at("b", 4, 1));
        assert_eq!(s.sync(catalog(vec![stamp("a", 2, Some(1)), stamp("b", 4, Some(1))], &[]), Vec::new()), 0);
        assert!(!s.is_orphan("b"));
        assert_eq!(s.len(), 2);
    }
}
