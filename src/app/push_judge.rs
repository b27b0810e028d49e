//! Judging a flag right after a metrics push, at most once per gap per flag: a push inside the
//! gap defers one judgement to the gap's end, so a breach never waits for the controller's tick.
//!
//! Deferred judgements run in one task, [`DeferredJudgements::run`], which the server supervises
//! and stops on shutdown: no judgement runs detached from the process's task set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, watch};

use crate::controller::{self, Outcome};
use crate::domain::rollout::Flag;
use crate::rollouts::Rollouts;

/// Above this many flags remembered, those judged more than a gap ago are forgotten.
const REMEMBERED: usize = 10_000;

/// When to judge a flag that was just pushed to.
enum When {
    Now,
    /// At the end of the gap, this long from now.
    Later(Duration),
    /// A judgement at the end of the gap is already due.
    AlreadyDeferred,
}

pub struct PushJudge {
    min_gap: Duration,
    /// Per flag: when it was last judged, and whether a judgement is deferred.
    last: Mutex<HashMap<String, (Instant, bool)>>,
    rollouts: Rollouts,
    /// To [`DeferredJudgements`]: which flag, and when. Unbounded, yet it holds at most one entry
    /// per flag: a flag with a judgement deferred defers no other.
    deferred: mpsc::UnboundedSender<(String, tokio::time::Instant)>,
}

impl PushJudge {
    /// The judge, and the task that runs what it defers (for the caller to spawn).
    pub fn new(min_gap: Duration, rollouts: Rollouts) -> (Arc<Self>, DeferredJudgements) {
        let (deferred, requests) = mpsc::unbounded_channel();
        let judge = Arc::new(Self { min_gap, last: Mutex::new(HashMap::new()), rollouts, deferred });
        (Arc::clone(&judge), DeferredJudgements { judge, requests })
    }

    /// Judges `flag` after a push: at once, unless it was judged less than a gap ago; then once
    /// at the end of the gap. Returns what a judgement made at once did.
    pub async fn after_push(&self, flag: &Flag) -> Option<Outcome> {
        match self.plan(&flag.name) {
            When::Now => judge(&self.rollouts, flag).await,
            When::Later(wait) => {
                let due = tokio::time::Instant::now() + wait;
                if self.deferred.send((flag.name.clone(), due)).is_err() {
                    tracing::debug!(flag = %flag.name, "shutting down: the leader's tick judges this flag");
                }
                None
            }
            When::AlreadyDeferred => None,
        }
    }

    fn plan(&self, flag: &str) -> When {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if last.len() > REMEMBERED {
            last.retain(|_, (at, deferred)| *deferred || now.duration_since(*at) < self.min_gap);
        }
        match last.get_mut(flag) {
            Some((at, deferred)) if now.duration_since(*at) < self.min_gap => {
                if *deferred {
                    When::AlreadyDeferred
                } else {
                    *deferred = true;
                    When::Later(self.min_gap - now.duration_since(*at))
                }
            }
            _ => {
                last.insert(flag.to_owned(), (now, false));
                When::Now
            }
        }
    }

    /// Starts the gap of a flag whose deferred judgement is being made.
    fn judged_now(&self, flag: &str) {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        last.insert(flag.to_owned(), (Instant::now(), false));
    }

    /// Judges a flag whose deferred judgement is due, as the snapshot now holds it.
    async fn judge_deferred(&self, flag: String) {
        self.judged_now(&flag);
        if let Some(view) = self.rollouts.snapshot().get(&flag) {
            judge(&self.rollouts, &view.flag).await;
        }
    }
}

/// Judges a flag after a push (never advancing it: that is the leader's tick); a failure is logged.
async fn judge(rollouts: &Rollouts, flag: &Flag) -> Option<Outcome> {
    match controller::judge(rollouts, flag, false).await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::warn!(flag = %flag.name, error = %e, "could not judge the flag after a metrics push");
            None
        }
    }
}

/// The task that runs deferred judgements.
pub struct DeferredJudgements {
    judge: Arc<PushJudge>,
    requests: mpsc::UnboundedReceiver<(String, tokio::time::Instant)>,
}

impl DeferredJudgements {
    /// Runs each deferred judgement when it is due, several at once, until `stop` fires; then
    /// finishes the judgements under way and drops those not due yet (the leader's tick, on
    /// whichever replica leads, judges those flags).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let DeferredJudgements { judge, mut requests } = self;
        let mut waiting = FuturesUnordered::new();
        let mut judging = FuturesUnordered::new();
        loop {
            tokio::select! {
                Some((flag, due)) = requests.recv() => waiting.push(async move {
                    tokio::time::sleep_until(due).await;
                    flag
                }),
                Some(flag) = waiting.next() => judging.push(judge.judge_deferred(flag)),
                Some(()) = judging.next() => {}
                _ = stop.changed() => break,
            }
        }
        while judging.next().await.is_some() {}
    }
}
