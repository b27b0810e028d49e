//! Rollout state and its transitions: the lifecycle of DESIGN.md as a pure state machine.
//!
//! Time is an argument (`now_ms`, milliseconds since the Unix epoch); nothing here reads a clock.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::guards::{MetricSeries, bucket_ms_for};
use super::plan::FlagDefinition;
use super::secs_to_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    /// Waiting for its `scheduled_for` time; the leader starts it then (after its checks).
    Scheduled,
    Running,
    Paused,
    RolledBack,
    Completed,
}

impl Status {
    pub const ALL: [Status; 6] =
        [Status::Pending, Status::Scheduled, Status::Running, Status::Paused, Status::RolledBack, Status::Completed];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Scheduled => "scheduled",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::RolledBack => "rolled_back",
            Status::Completed => "completed",
        }
    }
}

/// What an operator (or the controller, or an alert) asks of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Start,
    Advance,
    Pause,
    Resume,
    Rollback,
    /// A scheduled flag back to `pending`.
    Cancel,
}

impl Command {
    pub const ALL: [Command; 6] =
        [Command::Start, Command::Advance, Command::Pause, Command::Resume, Command::Rollback, Command::Cancel];

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Start => "start",
            Command::Advance => "advance",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Rollback => "rollback",
            Command::Cancel => "cancel",
        }
    }

    pub fn action(self) -> Action {
        match self {
            Command::Start => Action::Start,
            Command::Advance => Action::Advance,
            Command::Pause => Action::Pause,
            Command::Resume => Action::Resume,
            Command::Rollback => Action::Rollback,
            Command::Cancel => Action::Cancel,
        }
    }
}

/// One operator's approval to enter a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Approval {
    pub stage: String,
    /// The actor, `operator:<token name>`: the same name twice counts once.
    pub by: String,
    pub at: i64,
    pub reason: String,
}

/// What an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Start,
    Advance,
    Pause,
    Resume,
    Rollback,
    /// A resolved alert, recorded for the audit; it changes nothing.
    AlertResolved,
    /// The store lost the flag (restarted empty, flushed) and the leader wrote back the copy its
    /// snapshot held: same status, stage and stage start, the version bumped.
    Restored,
    /// A stage's soak ended while a guard was still inconclusive: the flag holds for evidence.
    /// Recorded once per stage entry; it changes nothing.
    WaitingForEvidence,
    /// A pending flag given a start time.
    Schedule,
    /// A scheduled start called off (by an operator, a failed check, or the emergency stop).
    Cancel,
    /// An operator approved entering a stage that requires approval.
    Approve,
    /// The controller holds a flag: a check failed, an approval or the advance window is awaited,
    /// or the controller is frozen. Recorded once per stage entry and cause; it changes nothing.
    Held,
    /// A check the leader ran failed (recorded with its status and an excerpt of its answer).
    CheckFailed,
    /// The post-launch review was posted to the notification URLs.
    ReviewPosted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Start => "start",
            Action::Advance => "advance",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Rollback => "rollback",
            Action::AlertResolved => "alert_resolved",
            Action::Restored => "restored",
            Action::WaitingForEvidence => "waiting_for_evidence",
            Action::Schedule => "schedule",
            Action::Cancel => "cancel",
            Action::Approve => "approve",
            Action::Held => "held",
            Action::CheckFailed => "check_failed",
            Action::ReviewPosted => "review_posted",
        }
    }
}

/// Where a rollout stands. `version` grows by one with every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutState {
    pub status: Status,
    pub stage_index: usize,
    pub version: u64,
    /// When this incarnation of the flag was created (tells a re-created flag from the old one).
    pub created_at: i64,
    /// When the current stage was entered (ms since epoch); soak timers count from here.
    pub stage_entered_at: i64,
    /// The version that entered the current stage: names the stage's metric series.
    #[serde(default)]
    pub stage_version: u64,
    /// The length of the current stage's metric buckets (ms), fixed when the stage was entered:
    /// a window edited mid-stage must still find the stage's data. 0 in documents written before
    /// it was recorded, whose buckets were sized for the window.
    #[serde(default)]
    pub stage_bucket_ms: i64,
    pub updated_at: i64,
    /// When a scheduled flag is to start (ms since epoch); set only while `scheduled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<i64>,
    /// When the rollout first started: the post-launch review counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// Approvals given to enter the next stage (or the first, for a scheduled start); cleared
    /// whenever a stage is entered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Approval>,
}

/// A flag: its name, definition and rollout state, stored as one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    pub name: String,
    pub definition: FlagDefinition,
    pub state: RolloutState,
}

/// A flag's position as the audit log and notifications show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Position {
    pub status: Status,
    pub stage: String,
    pub percent: u8,
}

/// `10% (10%)`: the stage while running, otherwise the status (`paused (10%)`, `rolled_back (0%)`).
impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Status::Running => write!(f, "{} ({}%)", self.stage, self.percent),
            other => write!(f, "{} ({}%)", other.as_str(), self.percent),
        }
    }
}

/// One entry of a flag's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub version: u64,
    pub at: i64,
    pub action: Action,
    pub from: Option<Position>,
    pub to: Position,
    pub actor: String,
    pub reason: String,
}

/// What deleting a flag leaves behind: who deleted it, why and when, and what it was then (its last
/// version and position, and when this incarnation was created). Kept in the store's deletion
/// audit, which outlives the flag and its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    pub flag: String,
    pub at: i64,
    pub actor: String,
    pub reason: String,
    pub version: u64,
    pub last: Position,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("cannot {command} a flag that is {status}", command = .command.as_str(), status = .status.as_str())]
    Invalid { command: Command, status: Status },
    #[error("the new plan has no stage named {stage:?}, the stage the rollout is in; pause or roll back first")]
    StageRemoved { stage: String },
    #[error("only a pending or scheduled flag can be scheduled; this one is {status}", status = .status.as_str())]
    NotSchedulable { status: Status },
    #[error("no approval is awaited for stage {stage:?}: it is not the next stage, or does not require approval")]
    NoApprovalAwaited { stage: String },
}

impl Flag {
    /// A new flag, `pending`, version 1.
    pub fn new(name: String, definition: FlagDefinition, now_ms: i64) -> Self {
        let state = RolloutState {
            status: Status::Pending,
            stage_index: 0,
            version: 1,
            created_at: now_ms,
            stage_entered_at: now_ms,
            stage_version: 1,
            stage_bucket_ms: bucket_ms_for(definition.window_secs),
            updated_at: now_ms,
            scheduled_for: None,
            started_at: None,
            approvals: Vec::new(),
        };
        Self { name, definition, state }
    }

    pub fn stage_name(&self) -> &str {
        self.definition.stages.get(self.state.stage_index).map_or("", |s| s.name.as_str())
    }

    /// The share of users enabled by bucket right now.
    pub fn percent(&self) -> u8 {
        match self.state.status {
            Status::Pending | Status::Scheduled | Status::RolledBack => 0,
            Status::Running | Status::Paused | Status::Completed => {
                self.definition.stages.get(self.state.stage_index).map_or(0, |s| s.percent)
            }
        }
    }

    /// Internal users get the feature in every live stage, never when pending or rolled back.
    pub fn internal_enabled(&self) -> bool {
        matches!(self.state.status, Status::Running | Status::Paused | Status::Completed)
    }

    pub fn position(&self) -> Position {
        Position { status: self.state.status, stage: self.stage_name().to_owned(), percent: self.percent() }
    }

    /// Applies a command at `now_ms`; returns the new flag and its audit event.
    pub fn apply(
        &self,
        command: Command,
        actor: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<(Flag, AuditEvent), TransitionError> {
        let state = &self.state;
        let last = self.definition.stages.len().saturating_sub(1);
        let invalid = || TransitionError::Invalid { command, status: state.status };
        let (status, stage_index) = match (command, state.status) {
            (Command::Start, Status::Pending | Status::Scheduled) => (Status::Running, 0),
            (Command::Cancel, Status::Scheduled) => (Status::Pending, 0),
            (Command::Advance, Status::Running) if state.stage_index >= last => (Status::Completed, last),
            (Command::Advance, Status::Running) => (Status::Running, state.stage_index + 1),
            (Command::Pause, Status::Running) => (Status::Paused, state.stage_index),
            // Resuming a pause restarts the stage's soak: it must prove itself healthy while running.
            (Command::Resume, Status::Paused) => (Status::Running, state.stage_index),
            // After a rollback the plan restarts at the first percentage stage, never where it failed.
            (Command::Resume, Status::RolledBack) => (Status::Running, self.definition.first_percentage_stage()),
            (Command::Rollback, Status::Running | Status::Paused | Status::Completed) => {
                (Status::RolledBack, state.stage_index)
            }
            _ => return Err(invalid()),
        };
        // A pause keeps the stage (its soak clock and metric series); every other move starts anew.
        let (stage_entered_at, stage_version, stage_bucket_ms) = if command == Command::Pause {
            (state.stage_entered_at, state.stage_version, self.stage_bucket_ms())
        } else {
            (now_ms, state.version + 1, bucket_ms_for(self.definition.window_secs))
        };
        let entered = stage_version != state.stage_version;
        let next = Flag {
            name: self.name.clone(),
            definition: self.definition.clone(),
            state: RolloutState {
                status,
                stage_index,
                version: state.version + 1,
                stage_entered_at,
                stage_version,
                stage_bucket_ms,
                updated_at: now_ms,
                scheduled_for: None,
                started_at: state.started_at.or((command == Command::Start).then_some(now_ms)),
                approvals: if entered { Vec::new() } else { state.approvals.clone() },
                ..state.clone()
            },
        };
        let event = self.event_to(&next, command.action(), actor, reason, now_ms);
        Ok((next, event))
    }

    /// A pending flag gets a start time: `scheduled`, started by the leader at `at_ms`.
    pub fn schedule(
        &self,
        at_ms: i64,
        actor: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<(Flag, AuditEvent), TransitionError> {
        if !matches!(self.state.status, Status::Pending | Status::Scheduled) {
            return Err(TransitionError::NotSchedulable { status: self.state.status });
        }
        let mut next = self.clone();
        next.state.status = Status::Scheduled;
        next.state.scheduled_for = Some(at_ms);
        next.state.version += 1;
        next.state.updated_at = now_ms;
        let event = self.event_to(&next, Action::Schedule, actor, reason, now_ms);
        Ok((next, event))
    }

    /// The stage the controller would enter next: the first for a scheduled or pending flag, the
    /// one after the current for a running one; `None` after the last.
    pub fn next_stage(&self) -> Option<&super::plan::Stage> {
        match self.state.status {
            Status::Pending | Status::Scheduled => self.definition.stages.first(),
            Status::Running | Status::Paused => self.definition.stages.get(self.state.stage_index + 1),
            Status::RolledBack | Status::Completed => None,
        }
    }

    /// Distinct operators who approved entering `stage`.
    pub fn approvers(&self, stage: &str) -> usize {
        let mut by: Vec<&str> =
            self.state.approvals.iter().filter(|a| a.stage == stage).map(|a| a.by.as_str()).collect();
        by.sort_unstable();
        by.dedup();
        by.len()
    }

    /// Approvals the next stage still needs (0 when it needs none, or has them).
    pub fn approvals_missing(&self) -> usize {
        match self.next_stage() {
            Some(stage) if stage.requires_approval => {
                usize::from(stage.approvals.max(1)).saturating_sub(self.approvers(&stage.name))
            }
            _ => 0,
        }
    }

    /// Records an operator's approval to enter `stage`, which must be the next stage and require
    /// approval. The same operator approving twice counts once (the second is still audited).
    pub fn approve(
        &self,
        stage: &str,
        actor: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<(Flag, AuditEvent), TransitionError> {
        let next_stage = self.next_stage().filter(|s| s.requires_approval && s.name == stage);
        if next_stage.is_none() || matches!(self.state.status, Status::RolledBack | Status::Completed) {
            return Err(TransitionError::NoApprovalAwaited { stage: stage.to_owned() });
        }
        let mut next = self.clone();
        next.state.approvals.push(Approval {
            stage: stage.to_owned(),
            by: actor.to_owned(),
            at: now_ms,
            reason: reason.to_owned(),
        });
        next.state.version += 1;
        next.state.updated_at = now_ms;
        let event = self.event_to(&next, Action::Approve, actor, reason, now_ms);
        Ok((next, event))
    }

    /// Replaces the definition, keeping the rollout where it is (the current stage is found by
    /// name) with its soak clock and metric series: a new window reads the same buckets.
    pub fn redefine(
        &self,
        definition: FlagDefinition,
        actor: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<(Flag, AuditEvent), TransitionError> {
        let live = matches!(self.state.status, Status::Running | Status::Paused);
        let stage_index = if live {
            let current = self.stage_name();
            definition
                .stages
                .iter()
                .position(|s| s.name == current)
                .ok_or_else(|| TransitionError::StageRemoved { stage: current.to_owned() })?
        } else if self.state.status == Status::Completed {
            definition.stages.len().saturating_sub(1)
        } else if self.state.status == Status::Pending {
            0
        } else {
            self.state.stage_index.min(definition.stages.len().saturating_sub(1))
        };
        let next = Flag {
            name: self.name.clone(),
            definition,
            state: RolloutState {
                stage_index,
                version: self.state.version + 1,
                stage_bucket_ms: self.stage_bucket_ms(),
                updated_at: now_ms,
                ..self.state.clone()
            },
        };
        let event = self.event_to(&next, Action::Update, actor, reason, now_ms);
        Ok((next, event))
    }

    /// The same flag written back after the store lost it: status, stage, stage start and metric
    /// series kept (its soak goes on), the version bumped so that every replica takes it.
    pub fn restored(&self, actor: &str, reason: &str, now_ms: i64) -> (Flag, AuditEvent) {
        let next = Flag {
            name: self.name.clone(),
            definition: self.definition.clone(),
            state: RolloutState { version: self.state.version + 1, updated_at: now_ms, ..self.state.clone() },
        };
        let event = AuditEvent {
            version: next.state.version,
            at: now_ms,
            action: Action::Restored,
            from: None,
            to: next.position(),
            actor: actor.to_owned(),
            reason: reason.to_owned(),
        };
        (next, event)
    }

    /// The record of deleting this flag at `now_ms`.
    pub fn deletion(&self, actor: &str, reason: &str, now_ms: i64) -> Deletion {
        Deletion {
            flag: self.name.clone(),
            at: now_ms,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            version: self.state.version,
            last: self.position(),
            created_at: self.state.created_at,
        }
    }

    /// The audit event recording the creation of this flag.
    pub fn creation_event(&self, actor: &str, reason: &str) -> AuditEvent {
        AuditEvent {
            version: self.state.version,
            at: self.state.updated_at,
            action: Action::Create,
            from: None,
            to: self.position(),
            actor: actor.to_owned(),
            reason: reason.to_owned(),
        }
    }

    fn event_to(&self, next: &Flag, action: Action, actor: &str, reason: &str, now_ms: i64) -> AuditEvent {
        AuditEvent {
            version: next.state.version,
            at: now_ms,
            action,
            from: Some(self.position()),
            to: next.position(),
            actor: actor.to_owned(),
            reason: reason.to_owned(),
        }
    }

    /// Where this stage's guard metrics are counted.
    pub fn metric_series(&self) -> MetricSeries {
        MetricSeries::new(
            format!("{}.{}", self.state.created_at, self.state.stage_version),
            self.stage_bucket_ms(),
            self.definition.window_secs,
        )
    }

    /// The current stage's bucket length; for a stage entered before it was recorded, the length
    /// its window gave (the window of this definition, the one the stage's data was counted under).
    fn stage_bucket_ms(&self) -> i64 {
        match self.state.stage_bucket_ms {
            0 => bucket_ms_for(self.definition.window_secs),
            ms => ms,
        }
    }

    /// Milliseconds left in the current stage's soak (0 when over, `None` when not running).
    pub fn soak_remaining_ms(&self, now_ms: i64) -> Option<i64> {
        if self.state.status != Status::Running {
            return None;
        }
        let soak = self.definition.stages.get(self.state.stage_index)?.soak_secs;
        Some((self.state.stage_entered_at.saturating_add(secs_to_ms(soak)) - now_ms).max(0))
    }

    /// Where the current stage's guard window begins at `now_ms`: `window_secs` ago, but never
    /// before the stage was entered (a window counts only the stage's own data).
    pub fn window_start(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(secs_to_ms(self.definition.window_secs)).max(self.state.stage_entered_at)
    }
}

/// Why a user gets the answer they get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    InternalUser,
    InRollout,
    NotInRollout,
    FlagOff,
}

impl Reason {
    /// Every reason, in [`Reason::index`] order.
    pub const ALL: [Reason; 4] = [Reason::InternalUser, Reason::InRollout, Reason::NotInRollout, Reason::FlagOff];

    /// The reason's place in [`Reason::ALL`]: for per-reason counters kept in an array.
    pub fn index(self) -> usize {
        match self {
            Reason::InternalUser => 0,
            Reason::InRollout => 1,
            Reason::NotInRollout => 2,
            Reason::FlagOff => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InternalUser => "internal_user",
            Reason::InRollout => "in_rollout",
            Reason::NotInRollout => "not_in_rollout",
            Reason::FlagOff => "flag_off",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    pub enabled: bool,
    pub reason: Reason,
}

/// The answer for one user, given whether they are on the internal list and their bucket.
pub fn evaluate(percent: u8, internal_enabled: bool, is_internal: bool, bucket: u8) -> Evaluation {
    if !internal_enabled {
        return Evaluation { enabled: false, reason: Reason::FlagOff };
    }
    if is_internal {
        return Evaluation { enabled: true, reason: Reason::InternalUser };
    }
    if super::bucket::in_rollout(bucket, percent) {
        Evaluation { enabled: true, reason: Reason::InRollout }
    } else {
        Evaluation { enabled: false, reason: Reason::NotInRollout }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::plan::FlagDefinition;

    const T0: i64 = 1_700_000_000_000;

    fn flag_in(status: Status, stage_index: usize) -> Flag {
        let mut flag = Flag::new("f".into(), FlagDefinition::default(), T0);
        flag.state.status = status;
        flag.state.stage_index = stage_index;
        flag
    }

    fn legal(command: Command, status: Status, stage_index: usize) -> Option<(Status, usize)> {
        let last = 3;
        match (command, status) {
            (Command::Start, Status::Pending | Status::Scheduled) => Some((Status::Running, 0)),
            (Command::Cancel, Status::Scheduled) => Some((Status::Pending, 0)),
            (Command::Advance, Status::Running) if stage_index == last => Some((Status::Completed, last)),
            (Command::Advance, Status::Running) => Some((Status::Running, stage_index + 1)),
            (Command::Pause, Status::Running) => Some((Status::Paused, stage_index)),
            (Command::Resume, Status::Paused) => Some((Status::Running, stage_index)),
            (Command::Resume, Status::RolledBack) => Some((Status::Running, 1)),
            (Command::Rollback, Status::Running | Status::Paused | Status::Completed) => {
                Some((Status::RolledBack, stage_index))
            }
            _ => None,
        }
    }

    #[test]
    fn every_command_from_every_status_is_legal_or_a_typed_error() {
        for status in Status::ALL {
            for stage_index in 0..4 {
                for command in Command::ALL {
                    let flag = flag_in(status, stage_index);
                    let got = flag.apply(command, "operator:ann", "why", T0 + 5);
                    match legal(command, status, stage_index) {
                        Some((to_status, to_index)) => {
                            let (next, event) = got.unwrap_or_else(|e| panic!("{command:?} from {status:?}: {e}"));
                            assert_eq!((next.state.status, next.state.stage_index), (to_status, to_index));
                            assert_eq!(next.state.version, flag.state.version + 1);
                            assert_eq!(event.version, next.state.version);
                            assert_eq!(event.action, command.action());
                            assert_eq!(event.from, Some(flag.position()));
                            assert_eq!(event.to, next.position());
                            assert_eq!(
                                (event.actor.as_str(), event.reason.as_str(), event.at),
                                ("operator:ann", "why", T0 + 5)
                            );
                        }
                        None => assert_eq!(
                            got,
                            Err(TransitionError::Invalid { command, status }),
                            "{command:?} from {status:?}"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn the_runbook_plan_from_start_to_completed() {
        let mut flag = Flag::new("f".into(), FlagDefinition::default(), T0);
        let mut seen = vec![(flag.state.status, flag.percent(), flag.internal_enabled())];
        for command in [Command::Start, Command::Advance, Command::Advance, Command::Advance, Command::Advance] {
            flag = flag.apply(command, "controller", "", T0).map(|(f, _)| f).expect("legal");
            seen.push((flag.state.status, flag.percent(), flag.internal_enabled()));
        }
        assert_eq!(
            seen,
            vec![
                (Status::Pending, 0, false),
                (Status::Running, 0, true),
                (Status::Running, 10, true),
                (Status::Running, 50, true),
                (Status::Running, 100, true),
                (Status::Completed, 100, true),
            ]
        );
        assert_eq!(flag.state.version, 6);
    }

    #[test]
    fn rollback_is_zero_for_everyone_and_resume_restarts_at_ten_percent() {
        let flag = flag_in(Status::Running, 2);
        let (rolled, _) = flag.apply(Command::Rollback, "controller", "error_rate", T0).expect("legal");
        assert_eq!((rolled.percent(), rolled.internal_enabled()), (0, false));
        let (resumed, _) = rolled.apply(Command::Resume, "operator:ann", "", T0 + 1).expect("legal");
        assert_eq!((resumed.stage_name(), resumed.percent()), ("10%", 10));
        assert_eq!(resumed.state.stage_entered_at, T0 + 1);
    }

    #[test]
    fn pause_keeps_the_soak_clock_and_resume_restarts_it() {
        let flag = flag_in(Status::Running, 1);
        let (paused, _) = flag.apply(Command::Pause, "a", "", T0 + 10).expect("legal");
        assert_eq!(paused.state.stage_entered_at, T0);
        assert_eq!(paused.soak_remaining_ms(T0 + 10), None);
        let (running, _) = paused.apply(Command::Resume, "a", "", T0 + 20).expect("legal");
        assert_eq!(running.soak_remaining_ms(T0 + 20), Some(3_600_000));
        assert_eq!(running.soak_remaining_ms(T0 + 20 + 3_600_000 + 5), Some(0));
    }

    #[test]
    fn the_guard_window_starts_a_window_ago_but_never_before_the_stage() {
        let flag = flag_in(Status::Running, 1);
        let window_ms = 300_000;
        assert_eq!(flag.window_start(T0 + 10), T0, "the stage began 10 ms ago");
        assert_eq!(flag.window_start(T0 + window_ms + 7), T0 + 7);
        let mut endless = flag.clone();
        endless.definition.window_secs = u64::MAX;
        endless.state.stage_entered_at = i64::MIN;
        assert_eq!(endless.window_start(-5), i64::MIN, "saturates instead of overflowing");
    }

    #[test]
    fn a_position_reads_as_its_stage_while_running_and_as_its_status_otherwise() {
        let at = |status| Position { status, stage: "10%".into(), percent: 10 }.to_string();
        assert_eq!(at(Status::Running), "10% (10%)");
        assert_eq!(at(Status::Paused), "paused (10%)");
    }

    #[test]
    fn evaluation_reasons() {
        assert_eq!(evaluate(100, false, true, 0), Evaluation { enabled: false, reason: Reason::FlagOff });
        assert_eq!(evaluate(0, true, true, 0), Evaluation { enabled: true, reason: Reason::InternalUser });
        assert_eq!(evaluate(10, true, false, 9), Evaluation { enabled: true, reason: Reason::InRollout });
        assert_eq!(evaluate(10, true, false, 10), Evaluation { enabled: false, reason: Reason::NotInRollout });
    }

    #[test]
    fn a_new_window_keeps_the_stage_s_metric_series_and_the_next_stage_sizes_its_own() {
        let flag = flag_in(Status::Running, 1);
        let series = flag.metric_series();
        assert_eq!(series.bucket_ms, 5000, "a 300 s window");
        let mut wider = flag.definition.clone();
        wider.window_secs = 3600;
        let (edited, _) = flag.redefine(wider.clone(), "a", "", T0 + 1).expect("same stages");
        let kept = edited.metric_series();
        assert_eq!((kept.id.as_str(), kept.bucket_ms), (series.id.as_str(), 5000), "the same buckets");
        assert!(kept.ttl_secs >= 3600, "kept long enough for the new window");
        // A document from before bucket lengths were recorded: its stage's data is in buckets sized
        // for the window it had.
        let mut legacy = flag.clone();
        legacy.state.stage_bucket_ms = 0;
        let (edited, _) = legacy.redefine(wider, "a", "", T0 + 1).expect("same stages");
        assert_eq!(edited.metric_series(), kept);
        let (next, _) = edited.apply(Command::Advance, "a", "", T0 + 2).expect("legal");
        assert_eq!(next.metric_series().bucket_ms, 60_000, "the next stage sizes buckets for its window");
        let (paused, _) = next.apply(Command::Pause, "a", "", T0 + 3).expect("legal");
        assert_eq!(paused.metric_series(), next.metric_series(), "a pause keeps the stage's series");
    }

    #[test]
    fn redefining_keeps_the_current_stage_by_name_or_refuses() {
        let flag = flag_in(Status::Running, 2);
        let mut def = FlagDefinition::default();
        def.stages.remove(1);
        let (next, event) = flag.redefine(def.clone(), "operator:a", "", T0).expect("50% still exists");
        assert_eq!((next.stage_name(), next.state.stage_index, next.state.version), ("50%", 1, 2));
        assert_eq!(event.action, Action::Update);
        def.stages.remove(1);
        assert_eq!(
            flag.redefine(def, "operator:a", "", T0).map(|_| ()),
            Err(TransitionError::StageRemoved { stage: "50%".into() })
        );
    }
}
