//! Outbound webhooks on every transition, and per-flag rollback hooks.
//!
//! Transitions hand a [`Notice`] to a bounded queue and move on: delivery never delays or blocks
//! a state change. A worker posts each notice to every notification URL (and, for rollbacks, to the
//! flag's `rollback_hooks`) with a timeout and 3 retries with backoff; failures are logged and counted.
//! On shutdown the worker delivers what is still queued before it ends.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
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
}

/// The JSON body: Slack-compatible `text` plus structured fields.
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
        let from = e.from.as_ref().map_or_else(|| "new".to_owned(), Position::to_string);
        let text = format!(
            "{icon} {flag}: {action} {from} → {to} by {actor}: {reason}",
            flag = notice.flag,
            action = e.action.as_str(),
            to = e.to,
            actor = e.actor,
            reason = e.reason,
        );
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

/// Where notices go and how hard to try.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub urls: Vec<String>,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self { urls: Vec::new(), timeout: Duration::from_secs(5), retries: 3, backoff: Duration::from_millis(200) }
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
    /// Starts the deliveries of one notice, once there is room for them.
    async fn dispatch(&mut self, notice: &Notice) {
        let body = match serde_json::to_vec(&Message::new(notice)) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                tracing::error!(flag = notice.flag, error = %e, "cannot serialize a notification");
                return;
            }
        };
        let mut targets: Vec<String> = self.settings.urls.clone();
        if notice.event.action == Action::Rollback {
            targets.extend(notice.rollback_hooks.iter().cloned());
        }
        for url in targets {
            while self.deliveries.len() >= CONCURRENCY {
                self.deliveries.join_next().await;
            }
            let (client, settings, telemetry, body) =
                (self.client.clone(), Arc::clone(&self.settings), Arc::clone(&self.telemetry), body.clone());
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
        };
        let m = Message::new(&notice);
        assert_eq!(
            m.text,
            ":rotating_light: checkout: rollback 50% (50%) → rolled_back (0%) by controller: error_rate 0.034 > 0.01 over 1204 requests"
        );
        assert_eq!(m.at, "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn urls_are_redacted_to_scheme_and_host() {
        assert_eq!(redact("https://hooks.slack.com/services/T0/B0/secret"), "https://hooks.slack.com/…");
        assert_eq!(redact("http://user:pw@host:9/x?token=1"), "http://host:9/…");
    }
}
