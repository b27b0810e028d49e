//! Outbound webhooks on every transition, and per-flag rollback hooks.
//!
//! Transitions hand a [`Notice`] to a bounded queue and move on: delivery never delays or blocks
//! a state change. A worker names the notice's [`Event`], renders it once per [`Format`] among the
//! [`Target`]s subscribed to that event (Slack blocks, a Teams Adaptive Card, a Discord embed, or
//! the generic JSON) and posts it to each (and, for rollbacks, the generic JSON to the flag's
//! `rollback_hooks`) with a timeout and 3 retries with backoff; failures are logged and counted.
//! On shutdown the worker delivers what is still queued before it ends.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::clock::rfc3339;
use crate::domain::rollout::{Action, AuditEvent, Position, Status};
use crate::telemetry::Telemetry;
use crate::util::is_connection_refused;

/// One transition to announce.
#[derive(Debug, Clone)]
pub struct Notice {
    pub flag: String,
    pub event: AuditEvent,
    pub rollback_hooks: Vec<String>,
    /// Replaces the one-line `text` (the post-launch review's Markdown).
    pub text: Option<String>,
    /// For a `held` event, what holds the flag (`approval`, `window`, `freeze`, `check`).
    pub hold: Option<&'static str>,
}

/// What a notice announces, as a target's `events` names it: the audit action, except that an
/// advance into `completed` is `completed` and a hold for an approval is `approval_waiting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Create,
    Update,
    Schedule,
    Cancel,
    Start,
    Advance,
    Completed,
    Pause,
    Resume,
    Rollback,
    Approve,
    ApprovalWaiting,
    /// Any other hold: the freeze, a closed advance window, a failed `before_stage` check.
    Held,
    WaitingForEvidence,
    CheckFailed,
    AlertResolved,
    Restored,
    ReviewPosted,
}

impl Event {
    /// Every event, in the order the documentation lists them.
    pub const ALL: [Event; 18] = [
        Event::Create,
        Event::Update,
        Event::Schedule,
        Event::Cancel,
        Event::Start,
        Event::Advance,
        Event::Completed,
        Event::Pause,
        Event::Resume,
        Event::Rollback,
        Event::Approve,
        Event::ApprovalWaiting,
        Event::Held,
        Event::WaitingForEvidence,
        Event::CheckFailed,
        Event::AlertResolved,
        Event::Restored,
        Event::ReviewPosted,
    ];

    pub fn of(notice: &Notice) -> Self {
        match notice.event.action {
            Action::Create => Event::Create,
            Action::Update => Event::Update,
            Action::Schedule => Event::Schedule,
            Action::Cancel => Event::Cancel,
            Action::Start => Event::Start,
            Action::Advance if notice.event.to.status == Status::Completed => Event::Completed,
            Action::Advance => Event::Advance,
            Action::Pause => Event::Pause,
            Action::Resume => Event::Resume,
            Action::Rollback => Event::Rollback,
            Action::Approve => Event::Approve,
            Action::Held if notice.hold == Some("approval") => Event::ApprovalWaiting,
            Action::Held => Event::Held,
            Action::WaitingForEvidence => Event::WaitingForEvidence,
            Action::CheckFailed => Event::CheckFailed,
            Action::AlertResolved => Event::AlertResolved,
            Action::Restored => Event::Restored,
            Action::ReviewPosted => Event::ReviewPosted,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Create => "create",
            Event::Update => "update",
            Event::Schedule => "schedule",
            Event::Cancel => "cancel",
            Event::Start => "start",
            Event::Advance => "advance",
            Event::Completed => "completed",
            Event::Pause => "pause",
            Event::Resume => "resume",
            Event::Rollback => "rollback",
            Event::Approve => "approve",
            Event::ApprovalWaiting => "approval_waiting",
            Event::Held => "held",
            Event::WaitingForEvidence => "waiting_for_evidence",
            Event::CheckFailed => "check_failed",
            Event::AlertResolved => "alert_resolved",
            Event::Restored => "restored",
            Event::ReviewPosted => "review_posted",
        }
    }

    /// The one-character mark of the generic text (Slack emoji codes, which Slack and Discord render).
    fn icon(self) -> &'static str {
        match self {
            Event::Rollback => ":rotating_light:",
            Event::Completed => ":white_check_mark:",
            Event::CheckFailed => ":x:",
            Event::ApprovalWaiting | Event::Held | Event::WaitingForEvidence => ":hourglass:",
            Event::ReviewPosted => ":memo:",
            _ => ":arrow_forward:",
        }
    }

    /// Discord's embed colour (and the Teams card's): red for a rollback or a failed check, green
    /// for done, amber while held, blue for the rest.
    fn color(self) -> u32 {
        match self {
            Event::Rollback | Event::CheckFailed => 0xD7_26_3D,
            Event::Completed | Event::ReviewPosted => 0x2E_B6_7D,
            Event::ApprovalWaiting | Event::Held | Event::WaitingForEvidence | Event::Pause => 0xEC_B2_2E,
            _ => 0x36_C5_F0,
        }
    }

    /// The Adaptive Card's text colour of the title.
    fn teams_color(self) -> &'static str {
        match self {
            Event::Rollback | Event::CheckFailed => "Attention",
            Event::Completed | Event::ReviewPosted => "Good",
            Event::ApprovalWaiting | Event::Held | Event::WaitingForEvidence | Event::Pause => "Warning",
            _ => "Default",
        }
    }
}

/// The body a receiver gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Slack Block Kit: `blocks` with a `text` fallback, and a button to the dashboard.
    Slack,
    /// Microsoft Teams: an Adaptive Card (1.4) in a `message` attachment, as Teams Workflows
    /// ("Post to a channel when a webhook request is received") and incoming webhooks take it.
    Teams,
    /// Discord: one embed (title, description, colour by event, fields, timestamp).
    Discord,
    /// The structured JSON with a Slack-compatible `text` line ([`Message`]).
    #[default]
    Generic,
}

/// One receiver: where, in which format, and which events (`None` = all).
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub format: Format,
    pub events: Option<BTreeSet<Event>>,
}

impl Target {
    /// A receiver of every event in the generic format (`ROLLOUT_NOTIFY_URLS`).
    pub fn generic(url: impl Into<String>) -> Self {
        Self { url: url.into(), format: Format::Generic, events: None }
    }

    pub fn wants(&self, event: Event) -> bool {
        self.events.as_ref().is_none_or(|events| events.contains(&event))
    }
}

/// The URL may carry a secret: only its scheme and host are shown.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &redact(&self.url))
            .field("format", &self.format)
            .field("events", &self.events)
            .finish()
    }
}

/// The generic JSON body: Slack-compatible `text` plus structured fields.
#[derive(Debug, Serialize)]
pub struct Message<'a> {
    pub text: String,
    pub flag: &'a str,
    pub action: &'static str,
    pub from: Option<&'a Position>,
    pub to: &'a Position,
    pub actor: &'a str,
    pub reason: &'a str,
    pub version: u64,
    pub at: String,
}

impl<'a> Message<'a> {
    pub fn new(notice: &'a Notice) -> Self {
        let e = &notice.event;
        let icon = match e.action {
            Action::Rollback => ":rotating_light:",
            Action::Advance if e.to.status == Status::Completed => ":white_check_mark:",
            _ => ":arrow_forward:",
        };
        let text = format!("{icon} {}", summary(notice));
        Self {
            text: notice.text.clone().unwrap_or(text),
            flag: &notice.flag,
            action: e.action.as_str(),
            from: e.from.as_ref(),
            to: &e.to,
            actor: &e.actor,
            reason: &e.reason,
            version: e.version,
            at: rfc3339(e.at),
        }
    }
}

/// `checkout: rollback 50% (50%) → rolled_back (0%) by controller: <reason>`.
fn summary(notice: &Notice) -> String {
    let e = &notice.event;
    format!(
        "{flag}: {action} {from} → {to} by {actor}: {reason}",
        flag = notice.flag,
        action = e.action.as_str(),
        from = from_text(e),
        to = e.to,
        actor = e.actor,
        reason = e.reason,
    )
}

fn from_text(e: &AuditEvent) -> String {
    e.from.as_ref().map_or_else(|| "new".to_owned(), Position::to_string)
}

/// The mark of the Slack, Teams and Discord titles (Unicode: Discord does not expand `:codes:` in embeds).
fn mark(event: Event) -> &'static str {
    match event {
        Event::Rollback => "🚨",
        Event::Completed => "✅",
        Event::CheckFailed => "❌",
        Event::ApprovalWaiting | Event::Held | Event::WaitingForEvidence => "⏳",
        Event::ReviewPosted => "📝",
        _ => "▶️",
    }
}

/// `🚨 checkout: rollback`.
fn title(notice: &Notice, event: Event) -> String {
    format!("{} {}: {}", mark(event), notice.flag, event.as_str().replace('_', " "))
}

/// `50% (50%) → rolled_back (0%)` for a change, `new → …` for a creation, `at …` for an event
/// that changes nothing (a hold, a failed check).
fn movement(e: &AuditEvent) -> String {
    match (&e.from, e.action) {
        (Some(from), _) => format!("{from} → {}", e.to),
        (None, Action::Create) => format!("new → {}", e.to),
        (None, _) => format!("at {}", e.to),
    }
}

/// The body's main text: the review's Markdown when there is one, else the move and its reason.
fn body_text(notice: &Notice) -> String {
    let e = &notice.event;
    notice.text.clone().unwrap_or_else(|| format!("{}\n{}", movement(e), e.reason))
}

/// At most `max` characters: cut ones end in `…`.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Provider limits (characters), from their documentation.
pub mod limits {
    /// Slack: `text` of a section block, and what we keep of the fallback `text`.
    pub const SLACK_SECTION: usize = 3000;
    /// Slack: a `header` block's text.
    pub const SLACK_HEADER: usize = 150;
    /// Slack: one of a section's `fields`.
    pub const SLACK_FIELD: usize = 2000;
    /// Slack: blocks in one message.
    pub const SLACK_BLOCKS: usize = 50;
    /// Discord: embed title, description, field name, field value, all of an embed's text.
    pub const DISCORD_TITLE: usize = 256;
    pub const DISCORD_DESCRIPTION: usize = 4096;
    pub const DISCORD_FIELD_NAME: usize = 256;
    pub const DISCORD_FIELD_VALUE: usize = 1024;
    pub const DISCORD_EMBED_TOTAL: usize = 6000;
    /// Teams takes 28 KB per message; 6,000 characters of text stay under it even at 4 bytes each.
    pub const TEAMS_TEXT: usize = 6000;
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The facts every format lists: name, value.
fn facts(notice: &Notice) -> Vec<(&'static str, String)> {
    let e = &notice.event;
    vec![
        ("Flag", notice.flag.clone()),
        ("Stage", movement(e)),
        ("Actor", e.actor.clone()),
        ("Version", e.version.to_string()),
    ]
}

/// Renders `notice` (announcing `event`) as `format` expects; `dashboard` is the dashboard's URL.
pub fn render(format: Format, notice: &Notice, event: Event, dashboard: Option<&str>) -> Value {
    match format {
        Format::Generic => json!(Message::new(notice)),
        Format::Slack => slack(notice, event, dashboard),
        Format::Teams => teams(notice, event, dashboard),
        Format::Discord => discord(notice, event, dashboard),
    }
}

/// Slack Block Kit: header, the text in sections of at most 3,000 characters, the facts, the time,
/// a button to the dashboard; `text` is the notification's fallback.
fn slack(notice: &Notice, event: Event, dashboard: Option<&str>) -> Value {
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": clip(&title(notice, event), limits::SLACK_HEADER), "emoji": true},
    })];
    let fields: Vec<Value> = facts(notice)
        .into_iter()
        .map(|(name, value)| {
            json!({"type": "mrkdwn", "text": clip(&format!("*{name}*\n{}", slack_escape(&value)), limits::SLACK_FIELD)})
        })
        .collect();
    let mut tail = vec![
        json!({"type": "section", "fields": fields}),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": rfc3339(notice.event.at)}]}),
    ];
    if let Some(url) = dashboard {
        tail.push(json!({
            "type": "actions",
            "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open the dashboard"}, "url": url}],
        }));
    }
    let room = limits::SLACK_BLOCKS - 1 - tail.len();
    let sections = chunks(&slack_escape(&body_text(notice)), limits::SLACK_SECTION, room);
    blocks
        .extend(sections.into_iter().map(|text| json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})));
    blocks.extend(tail);
    let fallback = notice.text.clone().unwrap_or_else(|| format!("{} {}", event.icon(), summary(notice)));
    json!({"text": clip(&fallback, limits::SLACK_SECTION), "blocks": blocks})
}

/// `text` in at most `count` pieces of at most `max` characters, cut at line ends where possible;
/// the last piece is clipped when the text does not fit.
fn chunks(text: &str, max: usize, count: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        if current.chars().count() + line.chars().count() > max && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        current.push_str(line);
    }
    if !current.is_empty() || out.is_empty() {
        out.push(current);
    }
    // A single line longer than `max` is clipped; pieces past `count` are dropped with a mark.
    let truncated = out.len() > count;
    out.truncate(count.max(1));
    let last = out.len() - 1;
    for (i, piece) in out.iter_mut().enumerate() {
        let piece_max = if i == last && truncated { max.saturating_sub(1) } else { max };
        *piece = clip(piece.trim_end_matches('\n'), piece_max);
        if piece.is_empty() {
            *piece = " ".into();
        }
    }
    if truncated {
        out[last].push('…');
    }
    out
}

/// Microsoft Teams: an Adaptive Card 1.4 in a `message` attachment.
fn teams(notice: &Notice, event: Event, dashboard: Option<&str>) -> Value {
    let facts: Vec<Value> =
        facts(notice).into_iter().map(|(title, value)| json!({"title": title, "value": value})).collect();
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": [
            {"type": "TextBlock", "text": title(notice, event), "weight": "Bolder", "size": "Medium",
             "color": event.teams_color(), "wrap": true},
            {"type": "TextBlock", "text": clip(&body_text(notice), limits::TEAMS_TEXT), "wrap": true},
            {"type": "FactSet", "facts": facts},
            {"type": "TextBlock", "text": rfc3339(notice.event.at), "isSubtle": true, "size": "Small", "wrap": true},
        ],
    });
    if let Some(url) = dashboard {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": "Open the dashboard", "url": url}]);
    }
    json!({
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": card}],
    })
}

/// Discord: one embed within Discord's limits (6,000 characters in all); mentions in the text
/// (`@everyone`) ping nobody.
fn discord(notice: &Notice, event: Event, dashboard: Option<&str>) -> Value {
    let title = clip(&title(notice, event), limits::DISCORD_TITLE);
    let fields: Vec<(String, String)> = facts(notice)
        .into_iter()
        .map(|(name, value)| (clip(name, limits::DISCORD_FIELD_NAME), clip(&value, limits::DISCORD_FIELD_VALUE)))
        .collect();
    let used = title.chars().count() + fields.iter().map(|(n, v)| n.chars().count() + v.chars().count()).sum::<usize>();
    let room = limits::DISCORD_DESCRIPTION.min(limits::DISCORD_EMBED_TOTAL.saturating_sub(used));
    let fields: Vec<Value> =
        fields.into_iter().map(|(name, value)| json!({"name": name, "value": value, "inline": true})).collect();
    let mut embed = json!({
        "title": title,
        "description": clip(&body_text(notice), room),
        "color": event.color(),
        "fields": fields,
        "timestamp": rfc3339(notice.event.at),
    });
    if let Some(url) = dashboard {
        embed["url"] = json!(url);
    }
    json!({"embeds": [embed], "allowed_mentions": {"parse": []}})
}

/// Where notices go and how hard to try.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub targets: Vec<Target>,
    /// The dashboard's URL as users reach it: the Slack button, the Teams action, the Discord link.
    pub dashboard_url: Option<String>,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            dashboard_url: None,
            timeout: Duration::from_secs(5),
            retries: 3,
            backoff: Duration::from_millis(200),
        }
    }
}

/// Queue size: transitions are rare, so a full queue means every receiver is stuck.
const QUEUE: usize = 1024;
/// Deliveries in flight at once.
const CONCURRENCY: usize = 32;

/// The notification clients could not be built (their timeouts would be lost).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client of the notifications")]
pub struct BuildError(#[source] reqwest::Error);

/// Starts the delivery worker; returns the queue transitions post to. When `stop` flips, the worker
/// takes no new notice, delivers every notice already queued and waits for the deliveries in
/// flight (the caller bounds that wait by the shutdown grace period).
pub fn spawn(
    settings: NotifySettings,
    telemetry: Arc<Telemetry>,
    mut stop: watch::Receiver<bool>,
) -> Result<(mpsc::Sender<Notice>, impl Future<Output = ()> + Send + 'static), BuildError> {
    let (tx, mut rx) = mpsc::channel::<Notice>(QUEUE);
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(BuildError)?;
    let worker = Worker { client, settings: Arc::new(settings), telemetry, deliveries: JoinSet::new() };
    let run = async move {
        let mut worker = worker;
        loop {
            tokio::select! {
                notice = rx.recv() => match notice {
                    Some(notice) => worker.dispatch(&notice).await,
                    None => break,
                },
                Some(_) = worker.deliveries.join_next(), if !worker.deliveries.is_empty() => {}
                _ = async { let _ = stop.wait_for(|stop| *stop).await; } => break,
            }
        }
        rx.close();
        let queued = rx.len();
        if queued + worker.deliveries.len() > 0 {
            tracing::info!(
                queued,
                in_flight = worker.deliveries.len(),
                "delivering the pending notifications before exiting"
            );
        }
        while let Some(notice) = rx.recv().await {
            worker.dispatch(&notice).await;
        }
        while worker.deliveries.join_next().await.is_some() {}
    };
    Ok((tx, run))
}

/// Posts notices, at most [`CONCURRENCY`] at once.
struct Worker {
    client: reqwest::Client,
    settings: Arc<NotifySettings>,
    telemetry: Arc<Telemetry>,
    deliveries: JoinSet<()>,
}

impl Worker {
    /// Starts the deliveries of one notice to the targets subscribed to its event, once there is
    /// room for them. Each format is rendered once.
    async fn dispatch(&mut self, notice: &Notice) {
        let event = Event::of(notice);
        let mut bodies: Vec<(Format, bytes::Bytes)> = Vec::new();
        let mut deliveries: Vec<(String, bytes::Bytes)> = Vec::new();
        let mut body = |format: Format| -> Option<bytes::Bytes> {
            if let Some((_, b)) = bodies.iter().find(|(f, _)| *f == format) {
                return Some(b.clone());
            }
            let value = render(format, notice, event, self.settings.dashboard_url.as_deref());
            match serde_json::to_vec(&value) {
                Ok(b) => {
                    let b = bytes::Bytes::from(b);
                    bodies.push((format, b.clone()));
                    Some(b)
                }
                Err(e) => {
                    tracing::error!(flag = notice.flag, error = %e, "cannot serialize a notification");
                    None
                }
            }
        };
        for target in self.settings.targets.iter().filter(|t| t.wants(event)) {
            if let Some(b) = body(target.format) {
                deliveries.push((target.url.clone(), b));
            }
        }
        if notice.event.action == Action::Rollback {
            for hook in &notice.rollback_hooks {
                if let Some(b) = body(Format::Generic) {
                    deliveries.push((hook.clone(), b));
                }
            }
        }
        for (url, body) in deliveries {
            while self.deliveries.len() >= CONCURRENCY {
                self.deliveries.join_next().await;
            }
            let (client, settings, telemetry) =
                (self.client.clone(), Arc::clone(&self.settings), Arc::clone(&self.telemetry));
            let flag = notice.flag.clone();
            self.deliveries.spawn(async move {
                if let Err(e) = deliver(&client, &settings, &url, body).await {
                    telemetry.notification_failed();
                    tracing::warn!(flag, target = %redact(&url), error = %e, "notification failed after retries");
                }
            });
        }
    }
}

/// Posts with retries: `retries` more attempts after the first, backoff doubling.
async fn deliver(client: &reqwest::Client, s: &NotifySettings, url: &str, body: bytes::Bytes) -> Result<(), String> {
    let mut wait = s.backoff;
    let mut last = String::new();
    for attempt in 0..=s.retries {
        if attempt > 0 {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        let sent = client.post(url).header("content-type", "application/json").body(body.clone()).send().await;
        match sent {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => last = format!("HTTP {}", resp.status()),
            Err(e) => last = if e.is_timeout() { "timed out".into() } else { "connection failed".into() },
        }
    }
    Err(last)
}

/// How long a reachability probe of a receiver may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The client for [`probe`]: [`PROBE_TIMEOUT`], no redirects. Build it once and reuse it.
pub fn probe_client() -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .connect_timeout(PROBE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(BuildError)
}

/// The client the leader runs checks with: no redirects, a connect timeout; each check sets its
/// own overall timeout.
pub fn check_client() -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .connect_timeout(PROBE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(BuildError)
}

/// Whether a receiver answers at all: one HEAD request, and any HTTP status counts (a webhook may
/// well answer 405 to HEAD). `Ok` holds the status; `Err` says why nothing answered.
pub async fn probe(client: &reqwest::Client, url: &str) -> Result<u16, &'static str> {
    match client.head(url).send().await {
        Ok(resp) => Ok(resp.status().as_u16()),
        Err(e) if e.is_timeout() => Err("timed out"),
        Err(e) if is_connection_refused(&e) => Err("connection refused"),
        Err(e) if e.is_connect() => Err("connection failed"),
        Err(e) if e.is_builder() => Err("not a usable URL"),
        Err(_) => Err("request failed"),
    }
}

/// Scheme and host only: webhook URLs often carry secrets in their path or query.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}/…")
        }
        None => "…".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_reads_as_one_slack_line() {
        let notice = Notice {
            flag: "checkout".into(),
            event: AuditEvent {
                version: 5,
                at: 1_700_000_000_000,
                action: Action::Rollback,
                from: Some(Position { status: Status::Running, stage: "50%".into(), percent: 50 }),
                to: Position { status: Status::RolledBack, stage: "50%".into(), percent: 0 },
                actor: "controller".into(),
                reason: "error_rate 0.034 > 0.01 over 1204 requests".into(),
            },
            text: None,
            rollback_hooks: vec![],
            hold: None,
        };
        let m = Message::new(&notice);
        assert_eq!(
            m.text,
            ":rotating_light: checkout: rollback 50% (50%) → rolled_back (0%) by controller: error_rate 0.034 > 0.01 over 1204 requests"
        );
        assert_eq!(m.at, "2023-11-14T22:13:20.000Z");
    }

    fn notice(action: Action, to: Status, text: Option<String>, hold: Option<&'static str>) -> Notice {
        Notice {
            flag: "checkout".into(),
            event: AuditEvent {
                version: 7,
                at: 1_700_000_000_000,
                action,
                from: Some(Position { status: Status::Running, stage: "50%".into(), percent: 50 }),
                to: Position { status: to, stage: "100%".into(), percent: 100 },
                actor: "controller".into(),
                reason: "soak over, healthy".into(),
            },
            text,
            rollback_hooks: vec![],
            hold,
        }
    }

    #[test]
    fn completion_and_awaited_approvals_are_events_of_their_own() {
        assert_eq!(Event::of(&notice(Action::Advance, Status::Running, None, None)), Event::Advance);
        assert_eq!(Event::of(&notice(Action::Advance, Status::Completed, None, None)), Event::Completed);
        assert_eq!(Event::of(&notice(Action::Held, Status::Running, None, Some("approval"))), Event::ApprovalWaiting);
        assert_eq!(Event::of(&notice(Action::Held, Status::Running, None, Some("freeze"))), Event::Held);
        for e in Event::ALL {
            let parsed: Event = serde_json::from_value(json!(e.as_str())).expect("its own name parses");
            assert_eq!(parsed, e);
        }
    }

    #[test]
    fn a_long_review_stays_within_every_providers_limits() {
        let review: String = (0..5000).map(|i| format!("| stage {i} | <ok> & fine |\n")).collect();
        let n = notice(Action::ReviewPosted, Status::Completed, Some(review), None);
        let slack = render(Format::Slack, &n, Event::ReviewPosted, Some("https://r.example.com/ui/"));
        let blocks = slack["blocks"].as_array().expect("blocks");
        assert!(blocks.len() <= limits::SLACK_BLOCKS);
        let sections: Vec<&str> = blocks.iter().filter_map(|b| b["text"]["text"].as_str()).collect();
        assert!(sections.iter().all(|t| t.chars().count() <= limits::SLACK_SECTION));
        assert!(sections[1].starts_with("| stage 0 | &lt;ok&gt; &amp; fine |"), "{}", sections[1]);
        assert!(sections.last().is_some_and(|t| t.ends_with('…')), "the cut is marked");
        assert!(slack["text"].as_str().is_some_and(|t| t.chars().count() <= limits::SLACK_SECTION));

        let discord = render(Format::Discord, &n, Event::ReviewPosted, None);
        let embed = &discord["embeds"][0];
        let description = embed["description"].as_str().expect("description");
        assert!(description.chars().count() <= limits::DISCORD_DESCRIPTION);
        assert!(description.ends_with('…'));
        assert!(embed.get("url").is_none(), "no dashboard URL, no link");

        let teams = render(Format::Teams, &n, Event::ReviewPosted, None);
        assert!(serde_json::to_vec(&teams).expect("json").len() < 28 * 1024, "Teams takes 28 KB at most");
    }

    #[test]
    fn a_line_longer_than_a_section_is_clipped_and_short_text_stays_whole() {
        let long = "x".repeat(10_000);
        let pieces = chunks(&long, limits::SLACK_SECTION, 3);
        assert_eq!(pieces.len(), 1, "one line is one piece");
        assert_eq!(pieces[0].chars().count(), limits::SLACK_SECTION);
        assert!(pieces[0].ends_with('…'));
        assert_eq!(chunks("a\nb", 10, 5), ["a\nb"]);
        assert_eq!(chunks("aaaa\nbbbb\ncccc", 9, 2), ["aaaa", "bbbb\ncccc"], "cut at a line end");
        assert_eq!(chunks("aaaa\nbbbb\ncccc", 9, 1), ["aaaa…"], "what does not fit is marked");
        assert_eq!(clip("ünï", 3), "ünï");
        assert_eq!(clip("ünïc", 3), "ün…");
    }

    #[test]
    fn urls_are_redacted_to_scheme_and_host() {
        assert_eq!(redact("https://hooks.slack.com/services/T0/B0/secret"), "https://hooks.slack.com/…");
        assert_eq!(redact("http://user:pw@host:9/x?token=1"), "http://host:9/…");
    }
}
