//! The post-launch review: a rollout's timeline rebuilt from its audit history. Pure.
//!
//! Stage visits derive from transitions: `start`, `advance` and `resume` enter a stage; `advance`,
//! `rollback` and `pause` end the one in progress (an `advance` past the last stage completes the
//! rollout). Metric windows of past stages expire, so a visit keeps only what the audit recorded:
//! who moved it and why — the controller's reasons carry the guard values it judged.

use serde::Serialize;

use super::rollout::{Action, AuditEvent, Status};

/// How a stage visit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VisitOutcome {
    /// Moved on to the next stage.
    Advanced,
    /// The last stage passed: the rollout completed.
    Completed,
    RolledBack,
    Paused,
    /// A `start` or `resume` arrived while the visit was open (only seen in trimmed histories).
    Restarted,
    /// Still in progress.
    Current,
}

impl VisitOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            VisitOutcome::Advanced => "advanced",
            VisitOutcome::Completed => "completed",
            VisitOutcome::RolledBack => "rolled_back",
            VisitOutcome::Paused => "paused",
            VisitOutcome::Restarted => "restarted",
            VisitOutcome::Current => "current",
        }
    }
}

/// What set a rollback or a breach response off, from the audit actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `controller`: a guard breached, or the cohorts' sample ratio did not match.
    Guard,
    /// `alert`: a firing alert, through the Alertmanager webhook (`alert:<name>` reads the same).
    Alert,
    /// `operator:<name>`.
    Operator,
    /// Any other actor.
    Other,
}

impl Trigger {
    pub fn of(actor: &str) -> Self {
        if actor == "controller" {
            Trigger::Guard
        } else if actor == "alert" || actor.starts_with("alert:") {
            Trigger::Alert
        } else if actor.starts_with("operator:") {
            Trigger::Operator
        } else {
            Trigger::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Guard => "guard",
            Trigger::Alert => "alert",
            Trigger::Operator => "operator",
            Trigger::Other => "other",
        }
    }

    /// Guards and alerts act by themselves; operators and others are people or tools.
    pub fn is_automatic(self) -> bool {
        matches!(self, Trigger::Guard | Trigger::Alert)
    }
}

/// One stage, from the transition that entered it to the one that ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageVisit {
    pub stage: String,
    pub percent: u8,
    pub entered_at: i64,
    pub entered_by: AuditEvent,
    pub left_at: Option<i64>,
    pub left_by: Option<AuditEvent>,
    /// Until it ended, or until `now` while it is current.
    pub duration_ms: i64,
    pub outcome: VisitOutcome,
}

/// A rollback, or a pause by the controller or an alert: where it happened, who and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub at: i64,
    pub action: Action,
    /// The stage and percentage it left.
    pub stage: String,
    pub percent: u8,
    pub actor: String,
    pub trigger: Trigger,
    pub reason: String,
}

/// The timeline of one rollout.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Timeline {
    pub stages: Vec<StageVisit>,
    /// Every rollback, whoever asked for it.
    pub rollbacks: Vec<Incident>,
    /// Rollbacks and pauses by the controller (a guard breach, a sample-ratio mismatch) or an alert.
    pub breaches: Vec<Incident>,
    /// The first `start`.
    pub started_at: Option<i64>,
    /// When the rollout ended (completed or rolled back and not resumed); `None` while it goes on.
    pub ended_at: Option<i64>,
    /// From the first start to its end, or to `now` while it goes on; `None` before a start.
    pub duration_ms: Option<i64>,
}

fn incident(event: &AuditEvent) -> Incident {
    let (stage, percent) =
        event.from.as_ref().map_or_else(|| (event.to.stage.clone(), 0), |f| (f.stage.clone(), f.percent));
    Incident {
        at: event.at,
        action: event.action,
        stage,
        percent,
        actor: event.actor.clone(),
        trigger: Trigger::of(&event.actor),
        reason: event.reason.clone(),
    }
}

/// How `event` ends the visit in progress, if it ends one.
fn ends_visit(event: &AuditEvent) -> Option<VisitOutcome> {
    match event.action {
        Action::Advance if event.to.status == Status::Completed => Some(VisitOutcome::Completed),
        Action::Advance => Some(VisitOutcome::Advanced),
        Action::Rollback => Some(VisitOutcome::RolledBack),
        Action::Pause => Some(VisitOutcome::Paused),
        Action::Start | Action::Resume => Some(VisitOutcome::Restarted),
        Action::Create
        | Action::Update
        | Action::AlertResolved
        | Action::Restored
        | Action::WaitingForEvidence
        | Action::Schedule
        | Action::Cancel
        | Action::Approve
        | Action::Held
        | Action::CheckFailed
        | Action::ReviewPosted => None,
    }
}

/// Whether `event` enters a stage (`visit_open`: a visit is still in progress after it).
fn enters_stage(event: &AuditEvent, visit_open: bool) -> bool {
    match event.action {
        Action::Start | Action::Resume => true,
        Action::Advance => event.to.status == Status::Running,
        // The history before a restore was lost with the store: the stage goes on from here.
        Action::Restored => !visit_open && matches!(event.to.status, Status::Running | Status::Paused),
        _ => false,
    }
}

impl StageVisit {
    /// The visit `event` begins, in progress.
    fn entered(event: &AuditEvent) -> Self {
        StageVisit {
            stage: event.to.stage.clone(),
            percent: event.to.percent,
            entered_at: event.at,
            entered_by: event.clone(),
            left_at: None,
            left_by: None,
            duration_ms: 0,
            outcome: VisitOutcome::Current,
        }
    }
}

/// Rebuilds the timeline from the audit `events`, oldest first. `status` is the flag's status now.
pub fn timeline(events: &[AuditEvent], status: Status, now_ms: i64) -> Timeline {
    let mut t = Timeline::default();
    let mut open: Option<StageVisit> = None;
    let mut ended_at = None;
    for event in events {
        let ends = ends_visit(event);
        // Only an event that ends the visit closes it: a definition edit mid-stage does not.
        if let Some(outcome) = ends
            && let Some(mut visit) = open.take()
        {
            visit.left_at = Some(event.at);
            visit.left_by = Some(event.clone());
            visit.duration_ms = event.at - visit.entered_at;
            visit.outcome = outcome;
            t.stages.push(visit);
        }
        let enters = enters_stage(event, open.is_some());
        if enters {
            open = Some(StageVisit::entered(event));
        }
        if event.action == Action::Start && t.started_at.is_none() {
            t.started_at = Some(event.at);
        }
        let trigger = Trigger::of(&event.actor);
        if event.action == Action::Rollback {
            t.rollbacks.push(incident(event));
        }
        if matches!(event.action, Action::Rollback | Action::Pause) && trigger.is_automatic() {
            t.breaches.push(incident(event));
        }
        ended_at = match ends {
            Some(VisitOutcome::Completed | VisitOutcome::RolledBack) => Some(event.at),
            _ if enters => None,
            _ => ended_at,
        };
    }
    if let Some(mut visit) = open {
        visit.duration_ms = (now_ms - visit.entered_at).max(0);
        t.stages.push(visit);
    }
    // The history says when it ended; the flag's status says whether it is still over.
    t.ended_at = ended_at.filter(|_| matches!(status, Status::Completed | Status::RolledBack));
    t.duration_ms = t.started_at.map(|start| t.ended_at.unwrap_or(now_ms) - start);
    t
}

/// A duration for people: `45s`, `12m 5s`, `3h 0m`, `1d 1h`.
pub fn human_duration(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    let (d, h, m, s) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::plan::FlagDefinition;
    use crate::domain::rollout::{Command, Flag};

    const T0: i64 = 1_700_000_000_000;
    const H: i64 = 3_600_000;

    /// Applies `(hours after T0, command, actor, reason)` in order; returns the flag and its events.
    fn run(steps: &[(i64, Command, &str, &str)]) -> (Flag, Vec<AuditEvent>) {
        let mut flag = Flag::new("f".into(), FlagDefinition::default(), T0);
        let mut events = vec![flag.creation_event("operator:ann", "new")];
        for (hours, command, actor, reason) in steps {
            let (next, event) = flag.apply(*command, actor, reason, T0 + hours * H).expect("legal");
            flag = next;
            events.push(event);
        }
        (flag, events)
    }

    fn summary(t: &Timeline) -> Vec<(&str, i64, VisitOutcome)> {
        t.stages.iter().map(|v| (v.stage.as_str(), v.duration_ms / H, v.outcome)).collect()
    }

    #[test]
    fn the_runbook_plan_to_completion_has_four_visits_and_lasts_twenty_five_hours() {
        let (flag, events) = run(&[
            (0, Command::Start, "operator:ann", "go"),
            (1, Command::Advance, "controller", "soak of 1h passed, healthy: error_rate 0.002 <= 0.01"),
            (2, Command::Advance, "controller", "soak of 1h passed"),
            (3, Command::Advance, "controller", "soak of 1h passed"),
            (25, Command::Advance, "controller", "soak of 22h passed"),
        ]);
        let t = timeline(&events, flag.state.status, T0 + 30 * H);
        assert_eq!(
            summary(&t),
            [
                ("internal", 1, VisitOutcome::Advanced),
                ("10%", 1, VisitOutcome::Advanced),
                ("50%", 1, VisitOutcome::Advanced),
                ("100%", 22, VisitOutcome::Completed)
            ]
        );
        assert_eq!(t.stages[0].entered_by.actor, "operator:ann");
        assert_eq!(t.stages[0].left_by.as_ref().map(|e| e.reason.contains("error_rate 0.002")), Some(true));
        assert_eq!((t.started_at, t.ended_at, t.duration_ms), (Some(T0), Some(T0 + 25 * H), Some(25 * H)));
        assert!(t.rollbacks.is_empty() && t.breaches.is_empty());
    }

    #[test]
    fn a_rollback_ends_the_visit_and_a_resume_starts_a_new_one_at_ten_percent() {
        let (flag, events) = run(&[
            (0, Command::Start, "operator:ann", "go"),
            (1, Command::Advance, "controller", "soak"),
            (2, Command::Rollback, "controller", "error_rate 0.02 > 0.01 over 500 requests"),
            (3, Command::Resume, "operator:ann", "fixed"),
            (4, Command::Pause, "operator:bob", "lunch"),
            (5, Command::Resume, "operator:bob", "back"),
            (6, Command::Rollback, "operator:ann", "customer complaint"),
        ]);
        let t = timeline(&events, flag.state.status, T0 + 10 * H);
        assert_eq!(
            summary(&t),
            [
                ("internal", 1, VisitOutcome::Advanced),
                ("10%", 1, VisitOutcome::RolledBack),
                ("10%", 1, VisitOutcome::Paused),
                ("10%", 1, VisitOutcome::RolledBack)
            ]
        );
        let rollbacks: Vec<(&str, Trigger, &str)> =
            t.rollbacks.iter().map(|r| (r.stage.as_str(), r.trigger, r.reason.as_str())).collect();
        assert_eq!(
            rollbacks,
            [
                ("10%", Trigger::Guard, "error_rate 0.02 > 0.01 over 500 requests"),
                ("10%", Trigger::Operator, "customer complaint")
            ]
        );
        assert_eq!(t.breaches.len(), 1, "only the controller's rollback was a breach");
        assert_eq!(t.breaches[0].percent, 10);
        assert_eq!((t.ended_at, t.duration_ms), (Some(T0 + 6 * H), Some(6 * H)));
    }

    #[test]
    fn a_live_rollout_has_a_current_visit_and_runs_until_now() {
        let (flag, events) = run(&[
            (0, Command::Start, "operator:ann", "go"),
            (1, Command::Advance, "operator:ann", "skip"),
            (2, Command::Rollback, "alert:HighErrorRate", "alert firing"),
            (3, Command::Resume, "operator:ann", "again"),
        ]);
        let t = timeline(&events, flag.state.status, T0 + 5 * H);
        assert_eq!(
            t.stages.last().map(|v| (v.outcome, v.left_at, v.duration_ms)),
            Some((VisitOutcome::Current, None, 2 * H))
        );
        assert_eq!((t.ended_at, t.duration_ms), (None, Some(5 * H)), "resumed after the rollback: not over");
        assert_eq!(t.breaches[0].trigger, Trigger::Alert);
        let pending = timeline(&events[..1], Status::Pending, T0);
        assert_eq!(pending, Timeline::default());
    }

    #[test]
    fn a_definition_edit_in_the_middle_of_a_stage_keeps_the_stage_in_the_timeline() {
        let (flag, mut events) = run(&[(0, Command::Start, "operator:ann", "go")]);
        let (edited, update) =
            flag.redefine(FlagDefinition::default(), "operator:ann", "thresholds", T0 + H / 2).expect("legal");
        events.push(update);
        let (advanced, advance) = edited.apply(Command::Advance, "controller", "soak", T0 + H).expect("legal");
        events.push(advance);
        let t = timeline(&events, advanced.state.status, T0 + 2 * H);
        assert_eq!(summary(&t), [("internal", 1, VisitOutcome::Advanced), ("10%", 1, VisitOutcome::Current)], "{t:?}");
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(human_duration(45_000), "45s");
        assert_eq!(human_duration(725_000), "12m 5s");
        assert_eq!(human_duration(3 * H), "3h 0m");
        assert_eq!(human_duration(25 * H), "1d 1h");
        assert_eq!(human_duration(-5), "0s");
    }
}
