//! The post-launch review of a rollout: what it holds ([`Review`]), its JSON shape
//! ([`ReportBody`]) and its Markdown ([`markdown`]). Served by `GET /flags/{flag}/report` and posted
//! by the leader when a flag's `review_after_secs` have passed (see [`crate::timeline`]). The
//! timeline comes from the audit history ([`crate::domain::report`]); guard readings exist only for
//! the current stage, because the metric windows of past stages expire.

use std::fmt::Write;

use serde::Serialize;

use crate::clock::rfc3339;
use crate::domain::guards::{GuardReading, Health};
use crate::domain::report::{Incident, StageVisit, human_duration, timeline};
use crate::domain::rollout::{AuditEvent, Flag, Position, Status};
use crate::rollouts::{RolloutError, Rollouts, window_start};
use crate::store::{FlagStore, HISTORY_CAP};

/// What the post-launch review of a flag is made of.
pub struct Review {
    pub flag: Flag,
    /// Every audit event kept, oldest first.
    pub events: Vec<AuditEvent>,
    /// The current stage's verdicts, for a running or paused flag.
    pub health: Option<Health>,
    /// Where the current stage's guard window starts.
    pub since_ms: i64,
    pub now_ms: i64,
    /// The history held more events than it keeps: the oldest are gone.
    pub truncated: bool,
}

impl Review {
    /// Reads the review's material: the stored flag, its whole history, and the current stage's
    /// verdicts (the metric windows of past stages expire).
    pub async fn gather(store: &dyn FlagStore, rollouts: &Rollouts, name: &str) -> Result<Review, RolloutError> {
        let flag = store.get_flag(name).await?.ok_or_else(|| RolloutError::NotFound(name.to_owned()))?;
        let mut events = store.history(name, HISTORY_CAP).await?;
        let truncated = events.len() >= HISTORY_CAP;
        events.reverse();
        let health = match flag.state.status {
            Status::Running | Status::Paused => Some(rollouts.health(&flag).await?),
            _ => None,
        };
        let now_ms = rollouts.now_ms();
        Ok(Review { since_ms: window_start(&flag, now_ms), flag, events, health, now_ms, truncated })
    }

    /// The review as Markdown.
    pub fn markdown(&self) -> String {
        markdown(&ReportBody::new(self))
    }
}

/// An audit event as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventBody<'a> {
    pub version: u64,
    pub at: String,
    pub action: &'static str,
    pub from: Option<&'a Position>,
    pub to: &'a Position,
    pub actor: &'a str,
    pub reason: &'a str,
}

impl<'a> From<&'a AuditEvent> for EventBody<'a> {
    fn from(e: &'a AuditEvent) -> Self {
        Self {
            version: e.version,
            at: rfc3339(e.at),
            action: e.action.as_str(),
            from: e.from.as_ref(),
            to: &e.to,
            actor: &e.actor,
            reason: &e.reason,
        }
    }
}

/// Said in every report, JSON and Markdown.
pub const GUARDS_NOTE: &str = "guard readings are available for the current stage only: metric windows of past \
    stages expire; past stages show the reasons recorded in the audit when they advanced or rolled back";

/// The report as JSON.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReportBody<'a> {
    pub flag: &'a str,
    pub generated_at: String,
    pub status: &'static str,
    pub stage: &'a str,
    pub percent: u8,
    pub version: u64,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub total_duration_secs: Option<i64>,
    pub total_duration: Option<String>,
    pub stages: Vec<VisitBody>,
    pub rollbacks: Vec<IncidentBody>,
    pub breaches: Vec<IncidentBody>,
    /// Readings of the stage in progress (running or paused flags only).
    pub current_guards: Option<GuardsBody<'a>>,
    pub guards_note: &'static str,
    /// Every audit event, oldest first.
    pub events: Vec<EventBody<'a>>,
    /// The history held more events than it keeps: the oldest are gone.
    pub history_truncated: bool,
}

/// Who moved the rollout, when and why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StepBody {
    pub version: u64,
    pub at: String,
    pub action: &'static str,
    pub actor: String,
    pub reason: String,
}

impl From<&AuditEvent> for StepBody {
    fn from(e: &AuditEvent) -> Self {
        Self {
            version: e.version,
            at: rfc3339(e.at),
            action: e.action.as_str(),
            actor: e.actor.clone(),
            reason: e.reason.clone(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VisitBody {
    pub stage: String,
    pub percent: u8,
    pub entered_at: String,
    pub left_at: Option<String>,
    pub duration_secs: i64,
    pub duration: String,
    pub outcome: &'static str,
    pub entered_by: StepBody,
    pub left_by: Option<StepBody>,
}

impl From<&StageVisit> for VisitBody {
    fn from(v: &StageVisit) -> Self {
        Self {
            stage: v.stage.clone(),
            percent: v.percent,
            entered_at: rfc3339(v.entered_at),
            left_at: v.left_at.map(rfc3339),
            duration_secs: v.duration_ms / 1000,
            duration: human_duration(v.duration_ms),
            outcome: v.outcome.as_str(),
            entered_by: StepBody::from(&v.entered_by),
            left_by: v.left_by.as_ref().map(StepBody::from),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentBody {
    pub at: String,
    pub action: &'static str,
    pub stage: String,
    pub percent: u8,
    pub actor: String,
    /// `guard`, `alert`, `operator` or `other`.
    pub trigger: &'static str,
    pub reason: String,
}

impl From<&Incident> for IncidentBody {
    fn from(i: &Incident) -> Self {
        Self {
            at: rfc3339(i.at),
            action: i.action.as_str(),
            stage: i.stage.clone(),
            percent: i.percent,
            actor: i.actor.clone(),
            trigger: i.trigger.as_str(),
            reason: i.reason.clone(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GuardsBody<'a> {
    pub stage: &'a str,
    pub verdict: &'static str,
    pub window_secs: u64,
    /// The window counts only since this moment (the stage start, or the window's length ago).
    pub since: String,
    pub guards: Vec<GuardReading>,
}

impl<'a> ReportBody<'a> {
    pub fn new(review: &'a Review) -> Self {
        let Review { flag, events, health, since_ms, now_ms, truncated } = review;
        let (now_ms, since_ms) = (*now_ms, *since_ms);
        let t = timeline(events, flag.state.status, now_ms);
        Self {
            flag: &flag.name,
            generated_at: rfc3339(now_ms),
            status: flag.state.status.as_str(),
            stage: flag.stage_name(),
            percent: flag.percent(),
            version: flag.state.version,
            started_at: t.started_at.map(rfc3339),
            ended_at: t.ended_at.map(rfc3339),
            total_duration_secs: t.duration_ms.map(|ms| ms / 1000),
            total_duration: t.duration_ms.map(human_duration),
            stages: t.stages.iter().map(VisitBody::from).collect(),
            rollbacks: t.rollbacks.iter().map(IncidentBody::from).collect(),
            breaches: t.breaches.iter().map(IncidentBody::from).collect(),
            current_guards: health.as_ref().map(|h| GuardsBody {
                stage: flag.stage_name(),
                verdict: h.verdict.as_str(),
                window_secs: flag.definition.window_secs,
                since: rfc3339(since_ms),
                guards: h.guards.clone(),
            }),
            guards_note: GUARDS_NOTE,
            events: events.iter().map(EventBody::from).collect(),
            history_truncated: *truncated,
        }
    }
}

/// A table cell: pipes escaped, one line.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}

fn or_dash(text: Option<&str>) -> &str {
    text.unwrap_or("—")
}

fn place(p: &Position) -> String {
    match p.status {
        Status::Running => format!("{} ({}%)", p.stage, p.percent),
        other => format!("{} ({}%)", other.as_str(), p.percent),
    }
}

fn number(v: f64) -> String {
    ((v * 10_000.0).round() / 10_000.0).to_string()
}

/// The report as a Markdown document: summary, stages, breaches and rollbacks, guards, audit trail.
pub fn markdown(r: &ReportBody<'_>) -> String {
    let mut md = String::new();
    summary(&mut md, r);
    stages(&mut md, r);
    incidents(&mut md, r);
    guards(&mut md, r);
    audit_trail(&mut md, r);
    md
}

// Writing to a String cannot fail: the sections below ignore `writeln!`'s `Ok`.

fn summary(md: &mut String, r: &ReportBody<'_>) {
    let _ = writeln!(md, "# Post-launch review: {}\n", r.flag);
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| Status | {} — stage {} ({}%), version {} |", r.status, cell(r.stage), r.percent, r.version);
    let _ = writeln!(md, "| Started | {} |", or_dash(r.started_at.as_deref()));
    let ended = if r.started_at.is_some() && r.ended_at.is_none() { Some("not yet (in progress)") } else { None };
    let _ = writeln!(md, "| Ended | {} |", or_dash(r.ended_at.as_deref().or(ended)));
    let _ = writeln!(md, "| Total duration | {} |", or_dash(r.total_duration.as_deref()));
    let automatic = r.rollbacks.iter().filter(|i| matches!(i.trigger, "guard" | "alert")).count();
    let _ = writeln!(md, "| Rollbacks | {} ({automatic} by guards or alerts) |", r.rollbacks.len());
    let _ = writeln!(md, "| Generated | {} |\n", r.generated_at);
}

fn stages(md: &mut String, r: &ReportBody<'_>) {
    let _ = writeln!(md, "## Stages\n");
    if r.stages.is_empty() {
        let _ = writeln!(md, "The rollout has not started.\n");
        return;
    }
    let _ = writeln!(md, "| # | Stage | Percent | Entered | Left | Duration | Outcome | Entered by | Left by | Why |");
    let _ = writeln!(md, "|---:|---|---:|---|---|---|---|---|---|---|");
    for (i, v) in r.stages.iter().enumerate() {
        let why = v.left_by.as_ref().map_or(v.entered_by.reason.as_str(), |s| s.reason.as_str());
        let _ = writeln!(
            md,
            "| {} | {} | {}% | {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            cell(&v.stage),
            v.percent,
            v.entered_at,
            or_dash(v.left_at.as_deref()),
            v.duration,
            v.outcome,
            cell(&v.entered_by.actor),
            cell(or_dash(v.left_by.as_ref().map(|s| s.actor.as_str()))),
            cell(why),
        );
    }
    let _ = writeln!(md);
}

fn incidents(md: &mut String, r: &ReportBody<'_>) {
    let _ = writeln!(md, "## Breaches and rollbacks\n");
    let mut incidents: Vec<&IncidentBody> =
        r.rollbacks.iter().chain(r.breaches.iter().filter(|b| b.action != "rollback")).collect();
    incidents.sort_by(|a, b| a.at.cmp(&b.at));
    if incidents.is_empty() {
        let _ = writeln!(md, "None.\n");
        return;
    }
    let _ = writeln!(md, "| At | Action | Stage | Actor | Trigger | Reason |\n|---|---|---|---|---|---|");
    for i in incidents {
        let _ = writeln!(
            md,
            "| {} | {} | {} ({}%) | {} | {} | {} |",
            i.at,
            i.action,
            cell(&i.stage),
            i.percent,
            cell(&i.actor),
            i.trigger,
            cell(&i.reason)
        );
    }
    let _ = writeln!(md);
}

fn guards(md: &mut String, r: &ReportBody<'_>) {
    let _ = writeln!(md, "## Guard readings\n");
    let mut note = GUARDS_NOTE.to_owned();
    note[..1].make_ascii_uppercase();
    let _ = writeln!(md, "{note}.\n");
    let Some(g) = &r.current_guards else {
        let _ = writeln!(md, "The rollout is {}: no stage is being guarded now.\n", r.status);
        return;
    };
    let _ = writeln!(
        md,
        "Current stage {} ({}): verdict **{}** over a {} s window since {}.\n",
        cell(g.stage),
        r.status,
        g.verdict,
        g.window_secs,
        g.since
    );
    let _ = writeln!(md, "| Guard | Value | Threshold | Samples | Verdict |\n|---|---:|---:|---:|---|");
    for reading in &g.guards {
        let side = if reading.guard.breaches_below() { "<" } else { ">" };
        let _ = writeln!(
            md,
            "| {} | {} | {side} {} | {} of {} | {} |",
            reading.guard,
            reading.value.map_or_else(|| "—".to_owned(), number),
            reading.threshold.map_or_else(|| "—".to_owned(), number),
            reading.samples,
            reading.min_samples,
            reading.verdict.as_str()
        );
    }
    let _ = writeln!(md);
}

fn audit_trail(md: &mut String, r: &ReportBody<'_>) {
    let _ = writeln!(md, "## Audit trail\n");
    let _ = writeln!(md, "| At | Action | From → To | Actor | Reason |\n|---|---|---|---|---|");
    for e in &r.events {
        let from = e.from.map_or_else(|| "new".to_owned(), place);
        let _ = writeln!(
            md,
            "| {} | {} | {} → {} | {} | {} |",
            e.at,
            e.action,
            cell(&from),
            cell(&place(e.to)),
            cell(e.actor),
            cell(e.reason)
        );
    }
    if r.history_truncated {
        let _ = writeln!(md, "\nThe history is trimmed to its latest {HISTORY_CAP} events; earlier ones are gone.");
    }
}
