//! Changing rollouts: read the flag, apply the pure transition, write it back conditionally.
//!
//! The one place that turns operator, controller and alert requests into store writes, so the
//! version rules hold for all of them: a stale `expected_version` is refused, except for a
//! rollback, which is retried against the fresh state until it lands (rollback wins races).
//! Every successful write is counted and handed to the notifier.
//!
//! [`crate::app`] and the controller call it, never the reverse. It also reads guard health and
//! records guard signals for them, and takes the controller's lease.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::domain::guards::{
    Cohort, Cohorts, Guard, Health, HealthPoint, MetricSample, MetricSeries, WindowTotals, assess,
};
use crate::domain::plan::{DefinitionError, FlagDefinition};
use crate::domain::rollout::{Action, AuditEvent, Command, Deletion, Flag, TransitionError};
use crate::notify::Notice;
use crate::snapshot::Snapshot;
use crate::store::{Store, StoreError, StoreResult, Written};
use crate::telemetry::Telemetry;

/// How many times a write is re-tried when another writer got there first.
const MAX_ATTEMPTS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("no flag named {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("the flag is at version {found}, not the expected {expected}")]
    VersionConflict { expected: u64, found: u64 },
    #[error("the flag moved to another stage since the decision was made")]
    StageChanged,
    #[error("the flag kept changing under this request; try again")]
    Contended,
    #[error("invalid definition: {0}")]
    Definition(#[from] DefinitionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long [`Rollouts::note_once`] remembers that it recorded something.
pub const NOTE_MEMORY: std::time::Duration = std::time::Duration::from_secs(2 * 86_400);

/// An event recorded once per `key` (see [`Rollouts::note`]).
pub struct Note<'a> {
    pub action: Action,
    pub reason: &'a str,
    pub key: &'a str,
    pub remember: std::time::Duration,
    /// The notification's text instead of the one-line summary.
    pub text: Option<String>,
    /// For a hold, what holds the flag (the notification tells an awaited approval from the rest).
    pub hold: Option<&'static str>,
}

/// Who asks and why, and what they saw.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub actor: String,
    pub reason: String,
    /// Refuse unless the flag is at this version.
    pub expected_version: Option<u64>,
    /// Refuse unless the flag is still in the stage entered by this version (automatic decisions).
    pub expected_stage: Option<u64>,
    /// For rollbacks: what caused it (a guard name, `alert`, `operator`), for the metrics.
    pub cause: Option<String>,
}

impl Request {
    pub fn new(actor: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { actor: actor.into(), reason: reason.into(), ..Self::default() }
    }
}

#[derive(Clone)]
pub struct Rollouts {
    store: Arc<dyn Store>,
    snapshot: Arc<Snapshot>,
    clock: Arc<dyn Clock>,
    telemetry: Arc<Telemetry>,
    notices: Option<mpsc::Sender<Notice>>,
    /// This replica's name (in the lease and in audit reasons).
    replica: Arc<str>,
}

impl Rollouts {
    pub fn new(
        store: Arc<dyn Store>,
        snapshot: Arc<Snapshot>,
        clock: Arc<dyn Clock>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self { store, snapshot, clock, telemetry, notices: None, replica: "this replica".into() }
    }

    /// Names this replica in the audit reasons of what it writes on its own (restores).
    pub fn with_replica(mut self, replica: &str) -> Self {
        self.replica = replica.into();
        self
    }

    /// Sends every transition to the notifier from now on.
    pub fn with_notices(mut self, notices: mpsc::Sender<Notice>) -> Self {
        self.notices = Some(notices);
        self
    }

    /// The flag as stored now.
    pub async fn flag(&self, name: &str) -> Result<Flag, RolloutError> {
        self.load(name).await
    }

    /// The snapshot this replica serves from (writes update it at once).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The time rollouts run on (soak timers, audit events).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    async fn load(&self, name: &str) -> Result<Flag, RolloutError> {
        self.current(name).await?.ok_or_else(|| RolloutError::NotFound(name.to_owned()))
    }

    /// The flag as stored. One the store lost but this snapshot still serves is put back first,
    /// so that a command (a rollback above all) is never refused because the store lost its data.
    async fn current(&self, name: &str) -> Result<Option<Flag>, RolloutError> {
        if let Some(flag) = self.store.get_flag(name).await? {
            return Ok(Some(flag));
        }
        match self.snapshot.get(name).filter(|_| self.snapshot.is_orphan(name)) {
            Some(view) => {
                self.restore(&view.flag).await?;
                Ok(self.store.get_flag(name).await?)
            }
            None => Ok(None),
        }
    }

    /// Writes back a flag the store lost, as this snapshot holds it (stage and stage start kept),
    /// only if the store has no flag of that name: true when written, false when it already had
    /// one (restored by another replica, or created anew).
    pub async fn restore(&self, flag: &Flag) -> Result<bool, RolloutError> {
        let reason = format!("restored from replica {}'s snapshot after the store lost it", self.replica);
        let (next, event) = flag.restored("controller", &reason, self.clock.now_ms());
        let req = Request::new("controller", reason);
        let written = self.write(&next, 0, &event, &req).await?;
        if written {
            tracing::warn!(flag = %flag.name, version = next.state.version,
                status = flag.state.status.as_str(), stage = flag.stage_name(),
                "restored a flag the store had lost");
        }
        Ok(written)
    }

    /// Creates the flag or replaces its definition. Returns the flag and whether it was created.
    /// `req.expected_version` 0 means the flag must not exist yet.
    pub async fn put(
        &self,
        name: &str,
        definition: FlagDefinition,
        req: &Request,
    ) -> Result<(Flag, bool), RolloutError> {
        definition.validate()?;
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now_ms();
            let current = self.current(name).await?;
            // A definition edited at some version is not created again once the flag is deleted.
            if let (None, Some(expected @ 1..)) = (&current, req.expected_version) {
                return Err(RolloutError::VersionConflict { expected, found: 0 });
            }
            let (next, event, expected) = match &current {
                None if req.expected_version.is_some_and(|v| v != 0) => {
                    let expected = req.expected_version.unwrap_or_default();
                    return Err(RolloutError::VersionConflict { expected, found: 0 });
                }
                None => {
                    let flag = Flag::new(name.to_owned(), definition.clone(), now);
                    let event = flag.creation_event(&req.actor, &req.reason);
                    (flag, event, 0)
                }
                Some(flag) => {
                    check_expected(req, flag)?;
                    let (next, event) = flag.redefine(definition.clone(), &req.actor, &req.reason, now)?;
                    (next, event, flag.state.version)
                }
            };
            if self.write(&next, expected, &event, req).await? {
                return Ok((next, current.is_none()));
            }
        }
        Err(RolloutError::Contended)
    }

    /// A flag declared in the config file: created when absent; with `reconcile`, a stored
    /// definition that differs is replaced too (an equal one is left alone, so restarts write
    /// nothing). Writes are conditional and retried on a lost race: replicas starting together
    /// converge on one write.
    pub async fn declare(
        &self,
        name: &str,
        definition: FlagDefinition,
        reconcile: bool,
        req: &Request,
    ) -> Result<Declared, RolloutError> {
        definition.validate()?;
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now_ms();
            let (next, event, expected, outcome) = match self.store.get_flag(name).await? {
                None => {
                    let flag = Flag::new(name.to_owned(), definition.clone(), now);
                    let event = flag.creation_event(&req.actor, &req.reason);
                    (flag, event, 0, Declared::Created)
                }
                Some(flag) if !reconcile || flag.definition == definition => return Ok(Declared::Unchanged),
                Some(flag) => {
                    let (next, event) = flag.redefine(definition.clone(), &req.actor, &req.reason, now)?;
                    (next, event, flag.state.version, Declared::Updated)
                }
            };
            if self.write(&next, expected, &event, req).await? {
                return Ok(outcome);
            }
        }
        Err(RolloutError::Contended)
    }

    /// The first start on a store: when it holds no flag and never did (no deletion either),
    /// creates `default_flag` with the runbook's plan, pending, audited as `system`; then records
    /// in the shared settings that the first start happened, so a store the operators emptied
    /// later stays empty. True when this replica created the flag. Replicas starting together
    /// race safely: the creation is conditional (the loser finds the flag there and is done).
    pub async fn first_start(&self, default_flag: &str) -> Result<bool, RolloutError> {
        if self.store.setting(FIRST_START_SETTING).await?.is_some() {
            return Ok(false);
        }
        let empty = self.store.load_stamps().await?.stamps.is_empty() && self.store.deletions(1).await?.is_empty();
        let now = self.clock.now_ms();
        let created = if empty {
            let flag = Flag::new(default_flag.to_owned(), FlagDefinition::default(), now);
            let req =
                Request::new("system", "first start on an empty store: the default flag, with the runbook's plan");
            let event = flag.creation_event(&req.actor, &req.reason);
            self.write(&flag, 0, &event, &req).await?
        } else {
            false
        };
        let record = serde_json::json!({"at_ms": now, "default_flag": default_flag, "created": created});
        self.store.put_setting(FIRST_START_SETTING, Some(&record.to_string())).await?;
        Ok(created)
    }

    /// Applies a command. A rollback is re-applied to the fresh state until it lands, whatever the
    /// versions; any other command is refused when the flag changed since it was read.
    pub async fn transition(&self, name: &str, command: Command, req: &Request) -> Result<Flag, RolloutError> {
        for _ in 0..MAX_ATTEMPTS {
            let flag = self.load(name).await?;
            if command != Command::Rollback {
                check_expected(req, &flag)?;
            }
            if req.expected_stage.is_some_and(|v| v != flag.state.stage_version) {
                return Err(RolloutError::StageChanged);
            }
            let (next, event) = flag.apply(command, &req.actor, &req.reason, self.clock.now_ms())?;
            if self.write(&next, flag.state.version, &event, req).await? {
                tracing::info!(flag = name, action = command.as_str(), actor = %req.actor, reason = %req.reason,
                    version = next.state.version, "transition");
                return Ok(next);
            }
            if command != Command::Rollback {
                let found = self.load(name).await?.state.version;
                return Err(RolloutError::VersionConflict { expected: flag.state.version, found });
            }
        }
        Err(RolloutError::Contended)
    }

    /// A firing alert's rollback, once per episode and stage entry. The episode is remembered
    /// only with the stage entry it rolled back and the rolled-back state it made: a repeat
    /// (Alertmanager re-sends every `repeat_interval`) while that state stands is a duplicate, and
    /// an episode that found the flag not live (pending, rolled back) is not remembered at all, so
    /// its repeat acts once the flag is live again: started, resumed, or deleted and re-created.
    pub async fn alert_rollback(&self, name: &str, episode: &str, req: &Request) -> Result<AlertOutcome, RolloutError> {
        let flag = self.load(name).await?;
        let claim = alert_key(&flag, episode);
        if !self.store.remember_once(&claim, ALERT_EPISODE_TTL).await? {
            return Ok(AlertOutcome::Duplicate);
        }
        match self.transition(name, Command::Rollback, req).await {
            Ok(rolled_back) => {
                // A repeat finds the flag in the state this rollback made: mark it as this episode's.
                let claim = alert_key(&rolled_back, episode);
                if let Err(e) = self.store.remember_once(&claim, ALERT_EPISODE_TTL).await {
                    tracing::warn!(flag = name, error = %e,
                        "a repeat of this alert will read already_off, not duplicate");
                }
                Ok(AlertOutcome::RolledBack)
            }
            Err(e) => {
                // This episode did nothing here: forget it so that a repeat may act.
                if let Err(forget) = self.store.forget(&claim).await {
                    tracing::error!(flag = name, error = %forget,
                        "an alert that did not act stays remembered; its repeats will read duplicate");
                }
                match e {
                    RolloutError::Transition(TransitionError::Invalid { .. }) => Ok(AlertOutcome::AlreadyOff),
                    e => Err(e),
                }
            }
        }
    }

    /// Records a resolved alert in the flag's history, once per episode and incarnation; false
    /// for a repeat. It changes nothing else: a resolved alert never resumes a rollout.
    pub async fn alert_resolved(&self, flag: &Flag, episode: &str, reason: &str) -> Result<bool, RolloutError> {
        let key = format!("resolved:{}:{}:{episode}", flag.name, flag.state.created_at);
        if !self.store.remember_once(&key, ALERT_EPISODE_TTL).await? {
            return Ok(false);
        }
        let event = AuditEvent {
            version: flag.state.version,
            at: self.clock.now_ms(),
            action: Action::AlertResolved,
            from: None,
            to: flag.position(),
            actor: "alert".into(),
            reason: reason.to_owned(),
        };
        if let Err(e) = self.store.append_history(&flag.name, &event).await {
            if let Err(forget) = self.store.forget(&key).await {
                tracing::error!(flag = %flag.name, error = %forget,
                    "a resolved alert that was not recorded stays remembered");
            }
            return Err(e.into());
        }
        Ok(true)
    }

    /// Deletes a flag everywhere and records who deleted it, why, and what it was (its last
    /// version and position) in the deletion audit, which outlives the flag. The store publishes
    /// the deletion even when it had lost the flag already, so replicas drop their copies too; a
    /// flag neither the store nor this replica knows is [`RolloutError::NotFound`]. A write that
    /// lands between the read and the deletion is deleted with the next attempt.
    pub async fn delete(&self, name: &str, req: &Request) -> Result<Deletion, RolloutError> {
        for _ in 0..MAX_ATTEMPTS {
            let stored = self.store.get_flag(name).await.inspect_err(|_| self.telemetry.store_error())?;
            let expected = stored.as_ref().map_or(0, |f| f.state.version);
            let known = stored.or_else(|| self.snapshot.get(name).map(|view| view.flag.clone()));
            let record = known.map(|flag| flag.deletion(&req.actor, &req.reason, self.clock.now_ms()));
            match self.store.delete_flag(name, expected, record.as_ref()).await {
                Ok(Written::Yes) => {}
                Ok(Written::Conflict { .. }) => continue,
                Err(e) => {
                    self.telemetry.store_error();
                    return Err(e.into());
                }
            }
            self.snapshot.remove(name);
            self.telemetry.forget_flag(name);
            let record = record.ok_or_else(|| RolloutError::NotFound(name.to_owned()))?;
            tracing::info!(flag = name, actor = %record.actor, reason = %record.reason, version = record.version,
                status = record.last.status.as_str(), stage = %record.last.stage, "flag deleted");
            return Ok(record);
        }
        Err(RolloutError::Contended)
    }

    /// The guard verdicts of a flag's current stage, over its window (counting only since the
    /// stage began).
    pub async fn health(&self, flag: &Flag) -> Result<Health, StoreError> {
        let now = self.clock.now_ms();
        let series = flag.metric_series();
        let from = window_start(flag, now);
        let config = flag.definition.guard_config(flag.state.stage_index);
        let treatment = self.store.read_window(&flag.name, &series, from, now).await?;
        // The control cohort matters only to comparisons and the sample-ratio check.
        let control = if config.compare.is_empty() && config.expected_share.is_none_or(|s| s <= 0.0 || s >= 1.0) {
            WindowTotals::default()
        } else {
            self.store.read_window(&flag.name, &series.of(Cohort::Control), from, now).await?
        };
        Ok(assess(&config, &Cohorts { treatment, control }))
    }

    /// Adds a pushed sample to the current stage's series of its cohort.
    pub async fn record_sample(&self, flag: &Flag, sample: &MetricSample) -> Result<(), StoreError> {
        let series = flag.metric_series().of(sample.cohort);
        self.store
            .record_metrics(&flag.name, &series, self.clock.now_ms(), sample)
            .await
            .inspect_err(|_| self.telemetry.store_error())
    }

    /// Records one value the leader pulled for a guard (`None`: no reading).
    pub async fn record_pulled(
        &self,
        flag: &str,
        series: &MetricSeries,
        now_ms: i64,
        guard: Guard,
        value: Option<f64>,
    ) -> StoreResult<()> {
        self.store.record_pulled(flag, series, now_ms, guard, value).await
    }

    /// Appends a reading of a flag's guards to its guard history (see [`crate::store::MetricStore::record_health`]).
    pub async fn record_health(&self, flag: &str, point: &HealthPoint) -> StoreResult<()> {
        self.store.record_health(flag, point).await.inspect_err(|_| self.telemetry.store_error())
    }

    /// The guard history of a flag's current stage entry, oldest first: the readings of older
    /// entries kept until the leader's next reading are left out.
    pub async fn health_history(&self, flag: &Flag) -> StoreResult<Vec<HealthPoint>> {
        let mut points = self.store.health_history(&flag.name).await.inspect_err(|_| self.telemetry.store_error())?;
        points.retain(|p| p.stage_version == flag.state.stage_version);
        Ok(points)
    }

    /// Takes or renews the controller lease for `holder`; true when it leads for the next `ttl`.
    pub async fn try_lead(&self, holder: &str, ttl: std::time::Duration) -> StoreResult<bool> {
        self.store.try_lead(holder, ttl).await
    }

    /// Gives the controller lease up at once if `holder` has it.
    pub async fn resign(&self, holder: &str) -> StoreResult<()> {
        self.store.resign(holder).await
    }

    /// Records, once per stage entry, that a flag whose soak is over holds for evidence: an audit
    /// event and a notification, no change to the flag. True when this call recorded it.
    pub async fn note_waiting_for_evidence(&self, flag: &Flag, reason: &str) -> Result<bool, StoreError> {
        let key = format!("evidence:{}:{}.{}", flag.name, flag.state.created_at, flag.state.stage_version);
        self.note_once(flag, Action::WaitingForEvidence, reason, &key).await
    }

    /// Records an event that changes nothing (an audit entry and a notification, actor
    /// `controller`), once per `key`: true when this call recorded it. A failed write forgets the
    /// key again, so a later call records it.
    pub async fn note_once(&self, flag: &Flag, action: Action, reason: &str, key: &str) -> Result<bool, StoreError> {
        self.note(flag, &Note { action, reason, key, remember: NOTE_MEMORY, text: None, hold: None }).await
    }

    /// [`Rollouts::note_once`] with how long the key is remembered and the notification's own
    /// text (the post-launch review posts its Markdown).
    pub async fn note(&self, flag: &Flag, note: &Note<'_>) -> Result<bool, StoreError> {
        let (action, reason, key) = (note.action, note.reason, note.key);
        if !self.store.remember_once(key, note.remember).await? {
            return Ok(false);
        }
        let event = AuditEvent {
            version: flag.state.version,
            at: self.clock.now_ms(),
            action,
            from: None,
            to: flag.position(),
            actor: "controller".into(),
            reason: reason.to_owned(),
        };
        if let Err(e) = self.store.append_history(&flag.name, &event).await {
            let _ = self.store.forget(key).await;
            return Err(e);
        }
        tracing::info!(flag = %flag.name, action = action.as_str(), reason, "recorded");
        self.announce_with(flag, &event, note.text.clone(), note.hold);
        Ok(true)
    }

    /// Applies a pure change to the flag as stored now (`change` gets it and the time) and writes
    /// it if nobody wrote in between; a lost race is a [`RolloutError::VersionConflict`].
    pub async fn change<F>(&self, name: &str, req: &Request, change: F) -> Result<Flag, RolloutError>
    where
        F: Fn(&Flag, i64) -> Result<(Flag, AuditEvent), TransitionError>,
    {
        let flag = self.load(name).await?;
        check_expected(req, &flag)?;
        let (next, event) = change(&flag, self.clock.now_ms())?;
        if self.write(&next, flag.state.version, &event, req).await? {
            tracing::info!(flag = name, action = event.action.as_str(), actor = %req.actor, reason = %req.reason,
                version = next.state.version, "change");
            return Ok(next);
        }
        let found = self.load(name).await?.state.version;
        Err(RolloutError::VersionConflict { expected: flag.state.version, found })
    }

    fn announce(&self, flag: &Flag, event: &AuditEvent) {
        self.announce_with(flag, event, None, None);
    }

    fn announce_with(&self, flag: &Flag, event: &AuditEvent, text: Option<String>, hold: Option<&'static str>) {
        let Some(notices) = &self.notices else { return };
        let notice = Notice {
            flag: flag.name.clone(),
            event: event.clone(),
            rollback_hooks: flag.definition.rollback_hooks.clone(),
            text,
            hold,
        };
        if notices.try_send(notice).is_err() {
            self.telemetry.notification_failed();
            tracing::warn!(flag = %flag.name, "notification queue full; this event is not announced");
        }
    }

    /// Writes conditionally; on success the local snapshot takes the new state at once, the
    /// transition is counted and handed to the notifier.
    async fn write(&self, next: &Flag, expected: u64, event: &AuditEvent, req: &Request) -> Result<bool, RolloutError> {
        match self.store.write_flag(next, expected, event).await {
            Ok(Written::Yes) => {}
            Ok(Written::Conflict { .. }) => return Ok(false),
            Err(e) => {
                self.telemetry.store_error();
                return Err(e.into());
            }
        }
        self.snapshot.upsert(next.clone());
        self.telemetry.transition(&next.name, event.action.as_str());
        if event.action == Action::Rollback {
            self.telemetry.rollback(&next.name, req.cause.as_deref().unwrap_or("operator"));
        }
        self.announce(next, event);
        Ok(true)
    }
}

/// The shared setting that records the store's first start ([`Rollouts::first_start`]).
pub const FIRST_START_SETTING: &str = "first_start";

/// What [`Rollouts::declare`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    Created,
    Updated,
    Unchanged,
}

/// What a firing alert did to its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertOutcome {
    RolledBack,
    /// The flag was not live (pending or rolled back): nothing to do.
    AlreadyOff,
    /// A repeat of the episode that rolled this flag back.
    Duplicate,
}

/// How long an alert episode is remembered, so Alertmanager's repeats act once.
const ALERT_EPISODE_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// An episode's key for one stage entry of one incarnation of the flag.
fn alert_key(flag: &Flag, episode: &str) -> String {
    format!("alert:{}:{}.{}:{episode}", flag.name, flag.state.created_at, flag.state.stage_version)
}

/// Where a flag's guard window starts at `now_ms`: the window's length ago, but never before the
/// current stage began.
pub fn window_start(flag: &Flag, now_ms: i64) -> i64 {
    let window_ms = i64::try_from(flag.definition.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    now_ms.saturating_sub(window_ms).max(flag.state.stage_entered_at)
}

fn check_expected(req: &Request, flag: &Flag) -> Result<(), RolloutError> {
    match req.expected_version {
        Some(expected) if expected != flag.state.version => {
            Err(RolloutError::VersionConflict { expected, found: flag.state.version })
        }
        _ => Ok(()),
    }
}
