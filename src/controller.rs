//! The automatic stepper: advance flags that soaked healthy, roll back (or pause) on a breach.
//!
//! One replica at a time leads, through a lease in the store that it renews every tick; a replica
//! that dies is replaced once its lease runs out (one lease period). Soak timers come from the
//! stage start stored with the flag, so a new leader continues them. Decisions are written with
//! the stage they were made on (and, but for a rollback, the version), so two replicas ticking at
//! once can never skip or double a stage. Time comes from the injected clock; [`Controller::tick`]
//! is one step, which the tests call directly.
//!
//! The leader also repairs a store that lost its data (Redis restarted without persistence,
//! flushed): every flag its snapshot still serves but the store no longer has is written back as
//! the snapshot holds it — stage and stage start kept — only where the store has no flag of that
//! name (create-if-absent), with an audit event `restored`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::guards::{Health, HealthPoint, Verdict};
use crate::domain::plan::OnBreach;
use crate::domain::rollout::{Command, Flag, Status};
use crate::rollouts::{Request, RolloutError, Rollouts};
use crate::sources::SignalStats;
use crate::sources::prometheus::{Puller, QueryError};
use crate::timeline::Timeline;

/// What the controller did to one flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub flag: String,
    pub command: Command,
    pub reason: String,
}

pub struct Controller {
    rollouts: Rollouts,
    holder: String,
    lease: Duration,
    leading: AtomicBool,
    puller: Puller,
    signals: Arc<SignalStats>,
    timeline: Timeline,
    pace: HistoryPace,
}

/// When the leader last recorded each flag's guard readings in its guard history, and in which
/// stage entry: at most one reading per [`HistoryPace::every_ms`] per flag, decided in memory.
#[derive(Default)]
struct HistoryPace(Mutex<HashMap<String, (u64, i64)>>);

impl HistoryPace {
    /// A thirtieth of the flag's window, at least 5 s: a stage as long as its window gets 30
    /// points, and the readings never outpace the metric buckets.
    fn every_ms(flag: &Flag) -> i64 {
        crate::domain::secs_to_ms(flag.definition.window_secs / 30).max(5_000)
    }

    /// True (and noted) when `flag` is due a reading at `now_ms`: none yet in its stage entry,
    /// or the last one [`HistoryPace::every_ms`] ago or more.
    fn due(&self, flag: &Flag, now_ms: i64) -> bool {
        let mut last = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stage = flag.state.stage_version;
        let due = last
            .get(&flag.name)
            .is_none_or(|&(seen, at)| seen != stage || now_ms.saturating_sub(at) >= Self::every_ms(flag));
        if due {
            last.insert(flag.name.clone(), (stage, now_ms));
        }
        due
    }

    /// Forgets the flags that are gone.
    fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|name, _| keep(name));
    }
}

/// A name for this replica in the lease: host, process and a random suffix.
pub fn replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".into());
    let mut suffix = [0u8; 4];
    let _ = getrandom::fill(&mut suffix);
    format!("{host}-{}-{}", std::process::id(), hex::encode(suffix))
}

impl Controller {
    pub fn new(
        rollouts: Rollouts,
        holder: String,
        lease: Duration,
        signals: Arc<SignalStats>,
        puller: Puller,
        timeline: Timeline,
    ) -> Self {
        Self {
            rollouts,
            holder,
            lease,
            leading: AtomicBool::new(false),
            puller,
            signals,
            timeline,
            pace: HistoryPace::default(),
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Takes or renews the lease; if this replica leads, restores the flags the store lost, then
    /// steps every flag.
    pub async fn tick(&self) -> Vec<Outcome> {
        let leading = match self.rollouts.try_lead(&self.holder, self.lease).await {
            Ok(leading) => leading,
            Err(e) => {
                self.rollouts.telemetry().store_error();
                tracing::debug!(error = %e, "cannot reach the store for the lease");
                false
            }
        };
        if self.leading.swap(leading, Ordering::SeqCst) != leading {
            tracing::info!(holder = %self.holder, leading, "controller leadership changed");
        }
        self.rollouts.telemetry().set_leader(leading);
        if !leading {
            return Vec::new();
        }
        self.restore_lost().await;
        self.step().await
    }

    /// Writes back the flags the store lost that this replica's snapshot still serves.
    pub async fn restore_lost(&self) -> usize {
        let mut restored = 0;
        for view in self.rollouts.snapshot().orphans() {
            match self.rollouts.restore(&view.flag).await {
                Ok(true) => restored += 1,
                // The store has the flag again (another replica restored it, or it was created anew);
                // the change feed brings it.
                Ok(false) => {}
                Err(e) => tracing::warn!(flag = %view.flag.name, error = %e, "could not restore a lost flag"),
            }
        }
        restored
    }

    /// One pass over every running or paused flag.
    pub async fn step(&self) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        let views = self.rollouts.snapshot().all();
        let names: HashSet<&str> = views.iter().map(|v| v.flag.name.as_str()).collect();
        self.pace.retain(|name| names.contains(name));
        for view in views {
            if let Err(e) = self.pull(&view.flag).await {
                tracing::warn!(flag = %view.flag.name, error = %e, "could not record Prometheus readings");
            }
            if let Err(e) = self.timeline.post_review_if_due(&view.flag).await {
                tracing::warn!(flag = %view.flag.name, error = %e, "could not post the post-launch review");
            }
            let judged = if view.flag.state.status == Status::Scheduled {
                self.start_scheduled(&view.flag).await
            } else {
                judge_with(&self.rollouts, &view.flag, Some(Some(&self.timeline)), Some(&self.pace)).await
            };
            match judged {
                Ok(Some(outcome)) => outcomes.push(outcome),
                Ok(None) => {}
                Err(e) => tracing::warn!(flag = %view.flag.name, error = %e, "controller could not judge the flag"),
            }
        }
        outcomes
    }

    /// A scheduled flag: its `before_start` checks run when due (a failure cancels the start);
    /// at `scheduled_for` it starts unless something holds it (the freeze, a missing approval,
    /// the advance window, a `before_stage` check of the first stage).
    async fn start_scheduled(&self, flag: &Flag) -> Result<Option<Outcome>, RolloutError> {
        let now = self.rollouts.now_ms();
        let Some(at) = flag.state.scheduled_for else { return Ok(None) };
        if let Some((check, detail)) = self.timeline.before_start_checks(flag, now).await? {
            let reason = format!("check {check} failed: {detail}");
            return act(&self.rollouts, flag, Command::Cancel, reason, Some("check".into())).await;
        }
        if now < at || self.timeline.hold(flag, now).await?.is_some() {
            return Ok(None);
        }
        let reason = format!("scheduled start at {}", crate::clock::rfc3339(at));
        act(&self.rollouts, flag, Command::Start, reason, None).await
    }

    /// Runs the flag's PromQL guards when due and records what they read (a failed, empty or NaN
    /// read is recorded as no value: `insufficient_data`, never a rollback by itself).
    async fn pull(&self, flag: &Flag) -> Result<(), crate::store::StoreError> {
        let Some(config) = &flag.definition.prometheus else { return Ok(()) };
        if !matches!(flag.state.status, Status::Running | Status::Paused) {
            return Ok(());
        }
        let now = self.rollouts.now_ms();
        let readings = self.puller.pull_if_due(&flag.name, config, now).await;
        if readings.is_empty() {
            return Ok(());
        }
        self.signals.received("prometheus", now);
        let series = flag.metric_series();
        for (guard, reading) in readings {
            let value = match reading {
                Ok(v) => {
                    self.signals.accepted("prometheus");
                    Some(v)
                }
                Err(e) => {
                    self.signals.rejected("prometheus", query_error_kind(&e));
                    tracing::warn!(flag = %flag.name, %guard, error = %e, "PromQL guard gave no reading");
                    None
                }
            };
            self.rollouts.record_pulled(&flag.name, &series, now, guard, value).await?;
        }
        Ok(())
    }

    /// Ticks every `every` until shut down, then gives the lease up at once.
    pub async fn run(self: Arc<Self>, every: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => { self.tick().await; }
                _ = shutdown.changed() => break,
            }
        }
        if self.leading.swap(false, Ordering::SeqCst) {
            self.rollouts.telemetry().set_leader(false);
            if let Err(e) = self.rollouts.resign(&self.holder).await {
                tracing::warn!(error = %e, "could not release the controller lease; it expires by itself");
            }
        }
    }
}

/// Judges one running or paused flag and acts: on a breach apply its `on_breach`, on a
/// sample-ratio mismatch pause; when `may_advance`, advance a running flag whose soak is over and
/// whose guards are healthy, or record (once per stage) that it waits for evidence. Returns what
/// was done.
pub async fn judge(rollouts: &Rollouts, flag: &Flag, may_advance: bool) -> Result<Option<Outcome>, RolloutError> {
    judge_with(rollouts, flag, may_advance.then_some(None), None).await
}

/// [`judge`], for the leader: `advancing` is `Some` when it may advance, with the timeline whose
/// gates (freeze, approvals, advance windows, `before_stage` checks) an advance must pass and whose
/// `during` checks are breaches; with a `pace`, the readings go to the flag's guard history when due.
async fn judge_with(
    rollouts: &Rollouts,
    flag: &Flag,
    advancing: Option<Option<&Timeline>>,
    pace: Option<&HistoryPace>,
) -> Result<Option<Outcome>, RolloutError> {
    if !matches!(flag.state.status, Status::Running | Status::Paused) {
        return Ok(None);
    }
    let may_advance = advancing.is_some();
    let timeline = advancing.flatten();
    if let Some(timeline) = timeline
        && let Some(reason) = timeline.during_checks(flag).await?
    {
        let command = if flag.definition.on_breach == OnBreach::Pause { Command::Pause } else { Command::Rollback };
        return act(rollouts, flag, command, reason, Some("check".into())).await;
    }
    let health = rollouts.health(flag).await?;
    for reading in &health.guards {
        if let Some(value) = reading.value {
            rollouts.telemetry().guard_value(&flag.name, reading.guard, value);
        }
    }
    let now = rollouts.now_ms();
    if let Some(pace) = pace
        && pace.due(flag, now)
        && let Err(e) = rollouts.record_health(&flag.name, &HealthPoint::of(flag, &health, now)).await
    {
        tracing::warn!(flag = %flag.name, error = %e, "could not record the guard readings in the guard history");
    }
    let Some((command, reason, cause)) = decide(flag, &health, may_advance, now) else {
        if may_advance {
            hold_for_evidence(rollouts, flag, &health, now).await;
        }
        return Ok(None);
    };
    if command == Command::Advance
        && let Some(timeline) = timeline
        && timeline.hold(flag, now).await?.is_some()
    {
        return Ok(None);
    }
    act(rollouts, flag, command, reason, cause).await
}

/// Writes the controller's decision against the version (or stage) it was made on.
async fn act(
    rollouts: &Rollouts,
    flag: &Flag,
    command: Command,
    reason: String,
    cause: Option<String>,
) -> Result<Option<Outcome>, RolloutError> {
    let req = Request {
        actor: "controller".into(),
        reason,
        expected_version: (command != Command::Rollback).then_some(flag.state.version),
        expected_stage: Some(flag.state.stage_version),
        cause,
    };
    match rollouts.transition(&flag.name, command, &req).await {
        Ok(_) => Ok(Some(Outcome { flag: flag.name.clone(), command, reason: req.reason })),
        // Someone else moved the flag first: judge it again on the next tick.
        Err(RolloutError::VersionConflict { .. } | RolloutError::StageChanged | RolloutError::Transition(_)) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// What the verdicts call for: on a breach the flag's `on_breach`; on a sample-ratio mismatch a
/// pause; when `may_advance`, an advance of a running flag whose soak is over and whose guards are
/// all `ok` (or that has no data and `advance_without_data`). `None`: hold.
fn decide(flag: &Flag, health: &Health, may_advance: bool, now_ms: i64) -> Option<(Command, String, Option<String>)> {
    let running = flag.state.status == Status::Running;
    let soak_over = flag.soak_remaining_ms(now_ms) == Some(0);
    if health.verdict == Verdict::Breach {
        let command = match (flag.definition.on_breach, flag.state.status) {
            (OnBreach::Rollback, _) => Command::Rollback,
            (OnBreach::Pause, Status::Running) => Command::Pause,
            (OnBreach::Pause, _) => return None,
        };
        let cause = health.breaches().next().map(|g| g.guard.as_str().to_owned());
        return Some((command, health.summary(), cause));
    }
    if let Some(ratio) = health.sample_ratio.as_ref().filter(|r| r.mismatch && running) {
        return Some((Command::Pause, ratio.describe(), Some("sample_ratio_mismatch".into())));
    }
    if !(may_advance && soak_over && running) {
        return None;
    }
    match health.verdict {
        Verdict::Ok => {
            Some((Command::Advance, format!("soak of {} passed, healthy: {}", soak_text(flag), health.summary()), None))
        }
        Verdict::InsufficientData if flag.definition.advance_without_data => Some((
            Command::Advance,
            format!("soak of {} passed, no guard data (advance_without_data)", soak_text(flag)),
            None,
        )),
        _ => None,
    }
}

/// A soak that ended without evidence either way: say so once (audit and notification).
async fn hold_for_evidence(rollouts: &Rollouts, flag: &Flag, health: &Health, now_ms: i64) {
    if waiting_for_evidence(flag, health, now_ms).is_empty() {
        return;
    }
    let reason = format!("soak of {} passed, waiting for evidence: {}", soak_text(flag), health.summary());
    if let Err(e) = rollouts.note_waiting_for_evidence(flag, &reason).await {
        tracing::warn!(flag = %flag.name, error = %e, "could not record that the flag waits for evidence");
    }
}

/// The guards a running flag whose soak is over waits on: inconclusive ones (empty otherwise).
pub fn waiting_for_evidence(flag: &Flag, health: &Health, now_ms: i64) -> Vec<&'static str> {
    let soak_over = flag.soak_remaining_ms(now_ms) == Some(0);
    if !soak_over || flag.state.status != Status::Running || health.verdict != Verdict::Inconclusive {
        return Vec::new();
    }
    health.inconclusive().map(|g| g.guard.as_str()).collect()
}

fn query_error_kind(e: &QueryError) -> &'static str {
    match e {
        QueryError::Empty => "empty",
        QueryError::TooMany(_) => "too_many_series",
        QueryError::NotANumber(_) => "not_a_number",
        QueryError::Http(_) => "http_error",
        QueryError::Timeout(_) => "timeout",
        QueryError::Unreachable => "unreachable",
        QueryError::Malformed(_) => "malformed",
    }
}

fn soak_text(flag: &Flag) -> String {
    let secs = flag.definition.stages.get(flag.state.stage_index).map_or(0, |s| s.soak_secs);
    match secs {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
