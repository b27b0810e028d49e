//! What clients that evaluate locally read: every flag's configuration (`GET /flags/config`),
//! the stream of its changes (`GET /stream`), and batch evaluations (`POST /flags/{f}/evaluate`).
//! All of it from the snapshot; nothing waits on the store.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use tokio::sync::{broadcast, watch};

use super::App;
use crate::domain::rollout::Reason;
use crate::rollouts::RolloutError;
use crate::snapshot::{self, ChangeEvent, FlagView, Start};
use crate::telemetry::StreamStats;

/// How the change streams run on this replica.
pub struct StreamSettings {
    /// A heartbeat comment goes out after this long without an event.
    pub heartbeat: Duration,
    /// Open streams at most; over it a new one is refused.
    pub max_clients: usize,
    /// Flips to true when the server closes: every stream ends.
    pub stop: watch::Receiver<bool>,
}

/// The open streams, counted.
pub(super) struct Streams {
    settings: StreamSettings,
    open: Arc<AtomicUsize>,
    counts: Arc<StreamCounts>,
}

impl Streams {
    pub(super) fn new(settings: StreamSettings) -> Self {
        Self { settings, open: Arc::new(AtomicUsize::new(0)), counts: Arc::default() }
    }
}

/// What the change streams did since the replica started, for its metrics.
#[derive(Debug, Default)]
pub struct StreamCounts {
    /// Streams opened.
    pub opened: AtomicU64,
    /// Streams refused: the replica had `--max-stream-clients` open.
    pub refused: AtomicU64,
    /// Streams ended because their client fell more than the replay buffer behind.
    pub dropped_behind: AtomicU64,
    /// Events sent to clients: snapshots, changes, heartbeats (one per client each).
    pub events: AtomicU64,
}

/// Every flag's configuration, from one read of the snapshot, with its ETag.
pub struct ClientConfig {
    /// `{"flags": [FlagConfig, …]}`, by name.
    pub body: Bytes,
    pub etag: String,
}

/// A batch's answers, all from one version of the flag.
pub struct BatchAnswer {
    pub view: Arc<FlagView>,
    /// One per user, in the order given.
    pub enabled: Vec<bool>,
}

/// The replica has all the streams it takes.
#[derive(Debug, thiserror::Error)]
#[error("this replica serves {0} streams already; try another replica or later")]
pub struct TooManyStreams(pub usize);

/// What a stream sends, in order: where the client starts, then changes, with heartbeats between.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// `{"flags": […]}` as of change `seq`.
    Snapshot {
        seq: u64,
        body: Bytes,
    },
    Change(ChangeEvent),
    Heartbeat,
}

/// A client's stream: ends when the server closes, or when the client falls too far behind
/// (it reconnects and resumes, or starts from a snapshot). Holds its place among the open streams.
pub struct ChangeStream {
    inner: BoxStream<'static, StreamItem>,
}

impl Stream for ChangeStream {
    type Item = StreamItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamItem>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// One open stream, counted until dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream's state between items.
struct Follow {
    pending: VecDeque<StreamItem>,
    changes: broadcast::Receiver<ChangeEvent>,
    heartbeat: tokio::time::Interval,
    stop: watch::Receiver<bool>,
    counts: Arc<StreamCounts>,
    _slot: Slot,
}

/// What woke a stream up.
enum Woken {
    Stop,
    Change(Result<ChangeEvent, broadcast::error::RecvError>),
    Heartbeat,
}

impl Follow {
    async fn next(self) -> Option<(StreamItem, Self)> {
        let next = self.wait().await;
        if let Some((_, follow)) = &next {
            follow.counts.events.fetch_add(1, Ordering::Relaxed);
        }
        next
    }

    async fn wait(mut self) -> Option<(StreamItem, Self)> {
        if let Some(item) = self.pending.pop_front() {
            return Some((item, self));
        }
        let woken = tokio::select! {
            biased;
            _ = self.stop.wait_for(|stop| *stop) => Woken::Stop,
            change = self.changes.recv() => Woken::Change(change),
            _ = self.heartbeat.tick() => Woken::Heartbeat,
        };
        match woken {
            Woken::Stop => None,
            Woken::Change(Ok(event)) => {
                self.heartbeat.reset();
                Some((StreamItem::Change(event), self))
            }
            Woken::Change(Err(broadcast::error::RecvError::Lagged(missed))) => {
                tracing::debug!(missed, "a stream client fell behind; dropping it");
                self.counts.dropped_behind.fetch_add(1, Ordering::Relaxed);
                None
            }
            Woken::Change(Err(broadcast::error::RecvError::Closed)) => None,
            Woken::Heartbeat => Some((StreamItem::Heartbeat, self)),
        }
    }
}

impl App {
    /// The change streams' figures: open now, and counts since start.
    pub fn stream_stats(&self) -> StreamStats {
        let counts = &self.streams.counts;
        StreamStats {
            open: self.streams.open.load(Ordering::Relaxed) as u64,
            opened: counts.opened.load(Ordering::Relaxed),
            refused: counts.refused.load(Ordering::Relaxed),
            dropped_behind: counts.dropped_behind.load(Ordering::Relaxed),
            events: counts.events.load(Ordering::Relaxed),
        }
    }

    /// Every flag's configuration and its ETag (equal on every replica holding the same flags).
    pub fn client_config(&self) -> ClientConfig {
        let views = self.snapshot.all();
        ClientConfig { body: snapshot::config_body(&views), etag: snapshot::etag(&views, None) }
    }

    /// `flag` for each of `users`, all against the one version of the flag read once, counted in
    /// the evaluation metrics.
    pub fn evaluate_batch(&self, flag: &str, users: &[String]) -> Result<BatchAnswer, RolloutError> {
        let view = self.snapshot.get(flag).ok_or_else(|| RolloutError::NotFound(flag.to_owned()))?;
        let mut by_reason = [0u64; 4];
        let enabled = users
            .iter()
            .map(|user| {
                let answer = view.evaluate(user);
                by_reason[answer.evaluation.reason.index()] += 1;
                answer.evaluation.enabled
            })
            .collect();
        for (reason, count) in Reason::ALL.into_iter().zip(by_reason) {
            self.telemetry.evaluations(reason, count);
        }
        Ok(BatchAnswer { view, enabled })
    }

    /// A stream of the configuration's changes: the changes after `after` when this replica
    /// still holds them all, else the whole configuration first.
    pub fn stream(&self, after: Option<u64>) -> Result<ChangeStream, TooManyStreams> {
        let settings = &self.streams.settings;
        let open = &self.streams.open;
        let counts = &self.streams.counts;
        open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < settings.max_clients).then_some(n + 1))
            .map_err(|_| {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                TooManyStreams(settings.max_clients)
            })?;
        counts.opened.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(Arc::clone(open));
        let follower = self.snapshot.follow(after);
        let pending = match follower.start {
            Start::Snapshot { seq, views } => {
                VecDeque::from([StreamItem::Snapshot { seq, body: snapshot::config_body(&views) }])
            }
            Start::Replay(events) => events.into_iter().map(StreamItem::Change).collect(),
        };
        let period = settings.heartbeat;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let follow = Follow {
            pending,
            changes: follower.changes,
            heartbeat,
            stop: settings.stop.clone(),
            counts: Arc::clone(counts),
            _slot: slot,
        };
        Ok(ChangeStream { inner: Box::pin(futures::stream::unfold(follow, Follow::next)) })
    }
}
