//! The runbook's timeline around the stepper (application layer): scheduled starts, the checks
//! the leader runs (the runbook's staging pass and smoke tests), approval gates, advance windows,
//! the emergency stop (`rollback-all` and the controller freeze) and the post-launch review.
//!
//! The controller asks [`Timeline::hold`] before it enters a stage or starts a scheduled flag;
//! a hold is recorded once per stage entry and cause (audit `held` and a notification). Rollbacks
//! never ask: nothing here delays one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::domain::plan::{CheckDefinition, CheckWhen};
use crate::domain::rollout::{Action, Command, Flag, Status};
use crate::review::Review;
use crate::rollouts::{NOTE_MEMORY, Note, Request, RolloutError, Rollouts};
use crate::store::{Store, StoreError};

/// The setting that holds the freeze.
const FREEZE: &str = "freeze";
/// The latest a start may be scheduled: a year ahead.
const MAX_AHEAD_MS: i64 = 366 * 24 * 3600 * 1000;
/// How long a posted review is remembered: longer than any review is due after.
const REVIEW_MEMORY: Duration = Duration::from_secs(400 * 86_400);
/// How much of a failing check's answer the audit keeps.
const EXCERPT: usize = 200;

/// Who froze automatic advances and starts, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Freeze {
    pub by: String,
    pub at: i64,
    pub reason: String,
}

/// The latest run of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckRun {
    pub check: String,
    pub run_id: String,
    pub at: i64,
    pub passed: bool,
    /// The HTTP status, when the check answered.
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// `HTTP 503: <the start of the body>`, `timed out after 30s`, `unreachable: …`, or `HTTP 200`.
    pub detail: String,
    /// The flag incarnation and stage entry it ran for: runs of an older one are stale.
    pub flag_created_at: i64,
    pub stage_version: u64,
}

/// What a flag waits for, as `GET /flags/{flag}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WaitingFor {
    /// `approval`, `window`, `check` or `freeze`.
    pub what: &'static str,
    /// The stage it would enter.
    pub stage: Option<String>,
    /// `stage 10% waits for 1 more approval(s)`, `outside the advance window; it opens at …`, …
    pub detail: String,
}

/// Why the controller does not enter the next stage (or start a scheduled flag) yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    Frozen(Freeze),
    Approval { stage: String, missing: usize },
    Window { opens_at: Option<i64> },
    Check { check: String, detail: String },
}

impl Hold {
    /// `waiting_for` as the API shows it.
    pub fn waiting_for(&self) -> &'static str {
        match self {
            Hold::Frozen(_) => "freeze",
            Hold::Approval { .. } => "approval",
            Hold::Window { .. } => "window",
            Hold::Check { .. } => "check",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Hold::Frozen(f) => format!("frozen by {}: {}", f.by, f.reason),
            Hold::Approval { stage, missing } => format!("stage {stage} waits for {missing} more approval(s)"),
            Hold::Window { opens_at: Some(at) } => {
                format!("outside the advance window; it opens at {}", crate::clock::rfc3339(*at))
            }
            Hold::Window { opens_at: None } => "outside the advance window".into(),
            Hold::Check { check, detail } => format!("check {check} failed: {detail}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    #[error("the start time must be in the future and at most a year ahead")]
    StartTime,
    #[error("check {check} failed: {detail}")]
    CheckFailed { check: String, detail: String },
}

impl From<StoreError> for TimelineError {
    fn from(e: StoreError) -> Self {
        TimelineError::Rollout(e.into())
    }
}

/// What `rollback-all` changed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stopped {
    pub incident: String,
    pub changed: Vec<StoppedFlag>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoppedFlag {
    pub flag: String,
    pub from: &'static str,
    pub to: &'static str,
}

#[derive(Clone)]
pub struct Timeline {
    rollouts: Rollouts,
    /// Settings (the freeze), check runs, and the history the review is made of.
    store: Arc<dyn Store>,
    http: reqwest::Client,
}

impl Timeline {
    pub fn new(rollouts: Rollouts, store: Arc<dyn Store>, http: reqwest::Client) -> Self {
        Self { rollouts, store, http }
    }

    /// Puts a pending flag in `scheduled`, to be started by the leader at `at_ms`.
    pub async fn schedule(&self, name: &str, at_ms: i64, req: &Request) -> Result<Flag, TimelineError> {
        let now = self.rollouts.now_ms();
        if at_ms <= now || at_ms > now.saturating_add(MAX_AHEAD_MS) {
            return Err(TimelineError::StartTime);
        }
        Ok(self.rollouts.change(name, req, |flag, now| flag.schedule(at_ms, &req.actor, &req.reason, now)).await?)
    }

    /// Starts a flag now, after its `before_start` checks pass (run at once); a failing check
    /// refuses the start and is audited.
    pub async fn start_now(&self, name: &str, req: &Request) -> Result<Flag, TimelineError> {
        let flag = self.rollouts.flag(name).await?;
        if let Some((check, detail)) = self.run_checks(&flag, |w| *w == CheckWhen::BeforeStart, true).await? {
            self.note_check_failure(&flag, &check, &detail).await;
            return Err(TimelineError::CheckFailed { check, detail });
        }
        Ok(self.rollouts.transition(name, Command::Start, req).await?)
    }

    /// Records an operator's approval to enter `stage`.
    pub async fn approve(&self, name: &str, stage: &str, req: &Request) -> Result<Flag, TimelineError> {
        Ok(self.rollouts.change(name, req, |flag, now| flag.approve(stage, &req.actor, &req.reason, now)).await?)
    }

    pub async fn frozen(&self) -> Result<Option<Freeze>, RolloutError> {
        let Some(json) = self.store.setting(FREEZE).await? else { return Ok(None) };
        Ok(serde_json::from_str(&json).ok())
    }

    /// Freezes automatic advances and starts on every replica (rollbacks go on); kept in the store.
    pub async fn freeze(&self, by: &str, reason: &str) -> Result<Freeze, TimelineError> {
        let freeze = Freeze { by: by.to_owned(), at: self.rollouts.now_ms(), reason: reason.to_owned() };
        let json = serde_json::to_string(&freeze).map_err(|e| StoreError::Encode { what: "freeze", source: e })?;
        self.store.put_setting(FREEZE, Some(&json)).await?;
        tracing::warn!(by, reason, "controller frozen: no automatic advance or start until unfrozen");
        Ok(freeze)
    }

    pub async fn unfreeze(&self, by: &str, reason: &str) -> Result<Option<Freeze>, TimelineError> {
        let was = self.frozen().await?;
        self.store.put_setting(FREEZE, None).await?;
        tracing::warn!(by, reason, "controller unfrozen");
        Ok(was)
    }

    /// The emergency stop: every running, paused and scheduled flag rolled back (a scheduled
    /// start cancelled) at once, each audited with the same incident id.
    pub async fn rollback_all(&self, req: &Request) -> Result<Stopped, TimelineError> {
        let incident = format!("incident-{}", crate::store::new_generation());
        let reason = format!("{} (emergency stop {incident})", req.reason);
        let mut changed = Vec::new();
        let flags = self.rollouts.snapshot().all();
        let mut pending = futures::stream::FuturesUnordered::new();
        for view in flags.iter() {
            let command = match view.flag.state.status {
                Status::Running | Status::Paused => Command::Rollback,
                Status::Scheduled => Command::Cancel,
                _ => continue,
            };
            let req = Request { reason: reason.clone(), cause: Some("emergency_stop".into()), ..req.clone() };
            let name = view.flag.name.clone();
            pending.push(async move {
                let from = view.flag.state.status.as_str();
                (name.clone(), from, self.rollouts.transition(&name, command, &req).await)
            });
        }
        use futures::StreamExt;
        while let Some((flag, from, result)) = pending.next().await {
            match result {
                Ok(next) => changed.push(StoppedFlag { flag, from, to: next.state.status.as_str() }),
                // Moved meanwhile (stopped by someone else, or never live): nothing to stop.
                Err(RolloutError::Transition(_) | RolloutError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        changed.sort_by(|a, b| a.flag.cmp(&b.flag));
        tracing::warn!(%incident, flags = changed.len(), actor = %req.actor, "emergency stop");
        Ok(Stopped { incident, changed })
    }

    /// Posts the post-launch review (Markdown) to the notification URLs once, when the flag's
    /// `review_after_secs` have passed since its first start; audited `review_posted`. True when
    /// this call posted it.
    pub async fn post_review_if_due(&self, flag: &Flag) -> Result<bool, RolloutError> {
        let Some(started) = flag.state.started_at else { return Ok(false) };
        let after_ms = crate::domain::secs_to_ms(flag.definition.review_after_secs);
        if matches!(flag.state.status, Status::Pending | Status::Scheduled)
            || self.rollouts.now_ms() < started.saturating_add(after_ms)
        {
            return Ok(false);
        }
        let key = format!("review:{}:{}:{started}", flag.name, flag.state.created_at);
        let review = Review::gather(&*self.store, &self.rollouts, &flag.name).await?;
        let reason =
            format!("post-launch review, {} after the start", duration_text(flag.definition.review_after_secs));
        let note = Note {
            action: Action::ReviewPosted,
            reason: &reason,
            key: &key,
            remember: REVIEW_MEMORY,
            text: Some(review.markdown()),
            hold: None,
        };
        Ok(self.rollouts.note(flag, &note).await?)
    }

    /// Each check's latest run for this flag incarnation.
    pub async fn check_runs(&self, flag: &Flag) -> Result<Vec<CheckRun>, RolloutError> {
        let runs = self.store.check_runs(&flag.name).await?;
        Ok(runs
            .into_iter()
            .filter_map(|(_, json)| serde_json::from_str::<CheckRun>(&json).ok())
            .filter(|r| r.flag_created_at == flag.state.created_at)
            .collect())
    }

    /// When a check runs next, from its latest run.
    pub fn next_run(flag: &Flag, check: &CheckDefinition, last: Option<&CheckRun>) -> Option<i64> {
        let interval = i64::try_from(check.interval_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        match (&check.when, flag.state.status) {
            (CheckWhen::BeforeStart, Status::Scheduled) => {
                let offset = i64::try_from(check.offset_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
                let due = flag.state.scheduled_for?.saturating_sub(offset);
                match last {
                    Some(run) if run.at >= due => None,
                    _ => Some(due),
                }
            }
            (CheckWhen::BeforeStage(stage), Status::Running) if flag.next_stage().is_some_and(|s| &s.name == stage) => {
                match last.filter(|r| r.stage_version == flag.state.stage_version) {
                    Some(run) if run.passed => None,
                    Some(run) => Some(run.at.saturating_add(interval)),
                    None => flag.soak_remaining_ms(0).map(|_| flag.state.stage_entered_at),
                }
            }
            (CheckWhen::During, Status::Running) => {
                Some(last.map_or(flag.state.stage_entered_at, |r| r.at.saturating_add(interval)))
            }
            _ => None,
        }
    }

    /// What the flag waits for now, read-only (nothing runs): for a running flag whose soak is
    /// over, or a scheduled flag whose time has come. `None` when nothing holds it here.
    pub async fn waiting_for(&self, flag: &Flag) -> Result<Option<WaitingFor>, RolloutError> {
        let now = self.rollouts.now_ms();
        let due = match flag.state.status {
            Status::Running => flag.soak_remaining_ms(now) == Some(0),
            Status::Scheduled => flag.state.scheduled_for.is_some_and(|at| at <= now),
            _ => false,
        };
        if !due {
            return Ok(None);
        }
        let stage = flag.next_stage().map(|s| s.name.clone());
        let hold = if let Some(freeze) = self.frozen().await? {
            Some(Hold::Frozen(freeze))
        } else if let Some(stage) = stage.clone().filter(|_| flag.approvals_missing() > 0) {
            Some(Hold::Approval { stage, missing: flag.approvals_missing() })
        } else if let Some(window) = self.window_of(flag).filter(|w| !w.is_open(now)) {
            Some(Hold::Window { opens_at: window.next_opening(now) })
        } else {
            let runs = self.check_runs(flag).await?;
            runs.into_iter()
                .find(|r| !r.passed && r.stage_version == flag.state.stage_version)
                .map(|r| Hold::Check { check: r.check, detail: r.detail })
        };
        Ok(hold.map(|h| WaitingFor { what: h.waiting_for(), stage, detail: h.describe() }))
    }

    fn window_of(&self, flag: &Flag) -> Option<crate::domain::calendar::Window> {
        let stage = flag.next_stage().and_then(|s| s.advance_window.as_ref());
        stage.or(flag.definition.advance_window.as_ref()).and_then(|w| w.resolve().ok())
    }

    /// What holds `flag` from entering its next stage (or, when scheduled, from starting) now:
    /// the freeze, a missing approval, a closed advance window, or a `before_stage` check (run
    /// here when due). Recorded once per stage entry and cause.
    pub async fn hold(&self, flag: &Flag, now_ms: i64) -> Result<Option<Hold>, RolloutError> {
        let hold = self.find_hold(flag, now_ms).await?;
        if let Some(hold) = &hold {
            let key = format!(
                "held:{}:{}.{}:{}",
                flag.name,
                flag.state.created_at,
                flag.state.stage_version,
                hold.waiting_for()
            );
            let note = Note {
                action: Action::Held,
                reason: &hold.describe(),
                key: &key,
                remember: NOTE_MEMORY,
                text: None,
                hold: Some(hold.waiting_for()),
            };
            if let Err(e) = self.rollouts.note(flag, &note).await {
                tracing::warn!(flag = %flag.name, error = %e, "could not record a hold");
            }
        }
        Ok(hold)
    }

    async fn find_hold(&self, flag: &Flag, now_ms: i64) -> Result<Option<Hold>, RolloutError> {
        if let Some(freeze) = self.frozen().await? {
            return Ok(Some(Hold::Frozen(freeze)));
        }
        let missing = flag.approvals_missing();
        if let Some(stage) = flag.next_stage().filter(|_| missing > 0) {
            return Ok(Some(Hold::Approval { stage: stage.name.clone(), missing }));
        }
        if let Some(window) = self.window_of(flag)
            && !window.is_open(now_ms)
        {
            return Ok(Some(Hold::Window { opens_at: window.next_opening(now_ms) }));
        }
        let Some(stage) = flag.next_stage().map(|s| s.name.clone()) else { return Ok(None) };
        let before = |w: &CheckWhen| matches!(w, CheckWhen::BeforeStage(s) if *s == stage);
        let Some((check, detail)) = self.run_checks(flag, before, false).await? else { return Ok(None) };
        self.note_check_failure(flag, &check, &detail).await;
        Ok(Some(Hold::Check { check, detail }))
    }

    /// Runs the flag's checks that `when` selects and are due (all of them when `all`), records
    /// each run, and returns the first failure (check, detail). A check that passed for this stage
    /// entry is not run again; one that failed waits its interval (its latest failure still holds).
    async fn run_checks(
        &self,
        flag: &Flag,
        when: impl Fn(&CheckWhen) -> bool,
        all: bool,
    ) -> Result<Option<(String, String)>, RolloutError> {
        if !flag.definition.checks.iter().any(|c| when(&c.when)) {
            return Ok(None);
        }
        let runs = self.check_runs(flag).await?;
        let now = self.rollouts.now_ms();
        for check in flag.definition.checks.iter().filter(|c| when(&c.when)) {
            let last = runs.iter().find(|r| r.check == check.name && r.stage_version == flag.state.stage_version);
            let run = match (last, all) {
                (Some(run), false) if run.passed => continue,
                (Some(run), false) if Self::next_run(flag, check, Some(run)).is_some_and(|due| due > now) => {
                    run.clone()
                }
                _ => self.run_check(flag, check).await?,
            };
            if !run.passed {
                return Ok(Some((check.name.clone(), run.detail)));
            }
        }
        Ok(None)
    }

    /// The scheduled flag's `before_start` checks whose time has come (`scheduled_for −
    /// offset_secs`) and that did not run for this schedule yet; the first failure (check, detail).
    pub async fn before_start_checks(
        &self,
        flag: &Flag,
        now_ms: i64,
    ) -> Result<Option<(String, String)>, RolloutError> {
        if !flag.definition.checks.iter().any(|c| c.when == CheckWhen::BeforeStart) {
            return Ok(None);
        }
        let runs = self.check_runs(flag).await?;
        for check in flag.definition.checks.iter().filter(|c| c.when == CheckWhen::BeforeStart) {
            let last = runs.iter().find(|r| r.check == check.name);
            if Self::next_run(flag, check, last).is_none_or(|due| due > now_ms) {
                continue;
            }
            let run = self.run_check(flag, check).await?;
            if !run.passed {
                self.note_check_failure(flag, &check.name, &run.detail).await;
                return Ok(Some((check.name.clone(), run.detail)));
            }
        }
        Ok(None)
    }

    /// The flag's `during` checks that are due; the first failure is returned as a breach reason
    /// (`check synthetic failed: HTTP 503`).
    pub async fn during_checks(&self, flag: &Flag) -> Result<Option<String>, RolloutError> {
        if flag.state.status != Status::Running || !flag.definition.checks.iter().any(|c| c.when == CheckWhen::During) {
            return Ok(None);
        }
        let runs = self.check_runs(flag).await?;
        let now = self.rollouts.now_ms();
        for check in flag.definition.checks.iter().filter(|c| c.when == CheckWhen::During) {
            let last = runs.iter().find(|r| r.check == check.name && r.stage_version == flag.state.stage_version);
            if Self::next_run(flag, check, last).is_some_and(|due| due > now) {
                continue;
            }
            let run = self.run_check(flag, check).await?;
            if !run.passed {
                self.note_check_failure(flag, &check.name, &run.detail).await;
                return Ok(Some(format!("check {} failed: {}", check.name, run.detail)));
            }
        }
        Ok(None)
    }

    /// Audits a failed run (`check_failed`, with its status and an excerpt) and announces it.
    async fn note_check_failure(&self, flag: &Flag, check: &str, detail: &str) {
        let reason = format!("check {check} failed: {detail}");
        let key = format!("check-failed:{}:{}:{reason}", flag.name, flag.state.version);
        if let Err(e) = self.rollouts.note_once(flag, Action::CheckFailed, &reason, &key).await {
            tracing::warn!(flag = %flag.name, error = %e, "could not record a failed check");
        }
    }

    /// POSTs `{flag, stage, run_id, check}` to the check's URL; a 2xx within its timeout passes.
    async fn run_check(&self, flag: &Flag, check: &CheckDefinition) -> Result<CheckRun, RolloutError> {
        let run_id = crate::store::new_generation();
        let stage =
            flag.next_stage().filter(|_| matches!(check.when, CheckWhen::BeforeStage(_) | CheckWhen::BeforeStart));
        let stage = stage.map_or_else(|| flag.stage_name().to_owned(), |s| s.name.clone());
        let body = serde_json::json!({"flag": flag.name, "stage": stage, "run_id": run_id, "check": check.name});
        let started = Instant::now();
        let answer =
            self.http.post(&check.url).timeout(Duration::from_secs(check.timeout_secs)).json(&body).send().await;
        let (passed, status, detail) = match answer {
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                let excerpt: String = text.chars().take(EXCERPT).collect();
                let detail = if excerpt.trim().is_empty() || status.is_success() {
                    format!("HTTP {}", status.as_u16())
                } else {
                    format!("HTTP {}: {}", status.as_u16(), excerpt.trim())
                };
                (status.is_success(), Some(status.as_u16()), detail)
            }
            Err(e) if e.is_timeout() => (false, None, format!("timed out after {}s", check.timeout_secs)),
            Err(e) if e.is_connect() => (false, None, "unreachable: cannot connect".to_owned()),
            Err(_) => (false, None, "unreachable: the request failed".to_owned()),
        };
        let run = CheckRun {
            check: check.name.clone(),
            run_id,
            at: self.rollouts.now_ms(),
            passed,
            status,
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            detail,
            flag_created_at: flag.state.created_at,
            stage_version: flag.state.stage_version,
        };
        let json = serde_json::to_string(&run).map_err(|e| StoreError::Encode { what: "check run", source: e })?;
        self.store.put_check_run(&flag.name, &check.name, &json).await?;
        tracing::info!(flag = %flag.name, check = %check.name, passed, detail = %run.detail, "check ran");
        Ok(run)
    }
}

/// `24h`, `90m`, `45s`.
fn duration_text(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
