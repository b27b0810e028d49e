//! Guard signals coming in: metrics pushed by app services, Customer.io delivery events and
//! Alertmanager payloads; and the per-source counters `GET /debug/signals` shows.
//!
//! Every payload is counted once as received, then as accepted or rejected under a reason. The
//! edge counts what it refuses before a use case runs ([`App::signal_refused`]: a bad token, body
//! or signature); the use cases here count the rest.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::App;
use crate::controller::Outcome;
use crate::domain::guards::MetricSample;
use crate::domain::plan::valid_flag_name;
use crate::domain::rollout::Flag;
use crate::rollouts::{AlertOutcome, Request, RolloutError};
use crate::sources::SourceStats;
use crate::sources::alertmanager::Payload;
use crate::sources::customerio::{self, Event, Rejection};

/// The source names in the counters.
pub const PUSH: &str = "push";
pub const ALERTMANAGER: &str = "alertmanager";
pub const CUSTOMERIO: &str = "customerio";

/// Customer.io retries for days: remember delivered event ids this long.
const EVENT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What an Alertmanager payload did, reported back (and visible in Alertmanager's logs on errors).
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[schema(as = Summary)]
pub struct AlertSummary {
    pub alerts: usize,
    pub firing: usize,
    pub resolved: usize,
    pub rolled_back: Vec<String>,
    pub already_off: Vec<String>,
    pub duplicates: usize,
    pub unknown_flags: Vec<String>,
    pub without_flag: usize,
}

/// What a Customer.io event did.
pub enum EventOutcome<'a> {
    /// Not counted, and why: `not_an_email_guard_event`, `no_flag_mapped` or `unknown_flag`.
    Ignored(&'static str),
    /// Its delivery id was seen before: counted already.
    Duplicate { flag: &'a str },
    /// Counted for `flag`, and what the judgement that followed did at once.
    Counted { flag: &'a str, outcome: Option<Outcome> },
}

/// What counting a sample at most once did with it.
enum Ingested {
    /// Counted, and judged: what that caused at once.
    Counted(Option<Outcome>),
    /// Its key was seen before: counted already.
    Duplicate,
}

/// What each source has sent this replica, and how the sources are set up.
pub struct SignalsReport<'a> {
    pub sources: BTreeMap<&'static str, SourceStats>,
    pub customerio_configured: bool,
    pub alert_flag_label: &'a str,
}

impl App {
    /// Counts a payload the edge refused before it reached a use case, under `code`.
    pub fn signal_refused(&self, source: &'static str, code: &str) {
        self.signal_stats.received(source, self.clock.now_ms());
        self.signal_stats.rejected(source, code);
    }

    /// `POST /flags/{flag}/metrics`: records a sample for the flag's current stage and judges the
    /// flag (at once, or at the end of the push gap); returns what a judgement at once did.
    pub async fn push_metrics(&self, name: &str, sample: &MetricSample) -> Result<Option<Outcome>, RolloutError> {
        self.signal_stats.received(PUSH, self.clock.now_ms());
        let Some(view) = self.snapshot.get(name) else {
            self.signal_stats.rejected(PUSH, "flag_not_found");
            return Err(RolloutError::NotFound(name.to_owned()));
        };
        let outcome = self.ingest(&view.flag, sample).await?;
        self.signal_stats.accepted(PUSH);
        if let Some(outcome) = &outcome {
            self.signal_stats.count(PUSH, outcome.command.as_str(), 1);
        }
        Ok(outcome)
    }

    /// Whether Customer.io deliveries are taken (a signing key is configured).
    pub fn customerio_configured(&self) -> bool {
        !self.sources.cio_signing_keys.is_empty()
    }

    /// Checks a Customer.io delivery's signature over its raw body, before anything is parsed; a
    /// refusal is counted.
    pub fn verify_customerio(
        &self,
        signature: Option<&str>,
        timestamp: Option<&str>,
        body: &[u8],
    ) -> Result<(), Rejection> {
        let now = self.clock.now_ms();
        customerio::verify(&self.sources.cio_signing_keys, signature, timestamp, body, now)
            .inspect_err(|rejection| self.signal_refused(CUSTOMERIO, rejection.code()))
    }

    /// A verified Customer.io event: counted for the flag it maps to (once per delivery id
    /// `key`, when it has one) and judged like a push.
    pub async fn customerio_event(&self, event: &Event, key: Option<&str>) -> Result<EventOutcome<'_>, RolloutError> {
        let stats = &self.signal_stats;
        stats.received(CUSTOMERIO, self.clock.now_ms());
        stats.accepted(CUSTOMERIO);
        let ignored = |why: &'static str| {
            stats.count(CUSTOMERIO, why, 1);
            Ok(EventOutcome::Ignored(why))
        };
        let Some(sample) = event.sample() else { return ignored("not_an_email_guard_event") };
        let Some(flag) = self.sources.cio_mapping.flag_for(event) else { return ignored("no_flag_mapped") };
        let Some(view) = self.snapshot.get(flag) else { return ignored("unknown_flag") };
        let ingested = match key {
            Some(key) => self.ingest_once(&view.flag, &sample, key).await?,
            None => Ingested::Counted(self.ingest(&view.flag, &sample).await?),
        };
        match ingested {
            Ingested::Duplicate => {
                stats.count(CUSTOMERIO, "duplicate", 1);
                Ok(EventOutcome::Duplicate { flag })
            }
            Ingested::Counted(outcome) => {
                stats.count(CUSTOMERIO, event.metric.as_deref().unwrap_or("unknown"), 1);
                Ok(EventOutcome::Counted { flag, outcome })
            }
        }
    }

    /// `POST /alerts/alertmanager`: a firing alert labelled with a flag rolls it back, once per
    /// episode and stage entry; a resolved one is recorded in the flag's history.
    pub async fn apply_alerts(&self, payload: &Payload) -> Result<AlertSummary, RolloutError> {
        self.signal_stats.received(ALERTMANAGER, self.clock.now_ms());
        let label = self.sources.alert_flag_label.as_str();
        let mut summary = AlertSummary { alerts: payload.alerts.len(), ..AlertSummary::default() };
        for alert in &payload.alerts {
            let Some(flag) = alert.flag(label) else {
                summary.without_flag += 1;
                continue;
            };
            let Some(view) = valid_flag_name(flag).then(|| self.snapshot.get(flag)).flatten() else {
                summary.unknown_flags.push(flag.chars().take(128).collect());
                continue;
            };
            if alert.is_firing() {
                summary.firing += 1;
                let req = Request { cause: Some("alert".into()), ..Request::new("alert", alert.reason()) };
                match self.rollouts.alert_rollback(flag, &alert.episode(), &req).await {
                    Ok(AlertOutcome::RolledBack) => summary.rolled_back.push(flag.to_owned()),
                    Ok(AlertOutcome::AlreadyOff) => summary.already_off.push(flag.to_owned()),
                    Ok(AlertOutcome::Duplicate) => summary.duplicates += 1,
                    Err(RolloutError::NotFound(_)) => summary.unknown_flags.push(flag.to_owned()),
                    // Alertmanager retries the payload: nothing of this alert was remembered.
                    Err(e) => return Err(e),
                }
            } else {
                summary.resolved += 1;
                let reason = format!("{} (resolved)", alert.reason());
                if !self.rollouts.alert_resolved(&view.flag, &alert.episode(), &reason).await? {
                    summary.duplicates += 1;
                }
            }
        }
        self.count_alerts(&summary);
        Ok(summary)
    }

    fn count_alerts(&self, summary: &AlertSummary) {
        let stats = &self.signal_stats;
        stats.accepted(ALERTMANAGER);
        stats.count(ALERTMANAGER, "rollbacks", summary.rolled_back.len() as u64);
        stats.count(ALERTMANAGER, "duplicates", summary.duplicates as u64);
        stats.count(ALERTMANAGER, "unknown_flag", summary.unknown_flags.len() as u64);
        stats.count(ALERTMANAGER, "without_flag", summary.without_flag as u64);
        stats.count(ALERTMANAGER, "resolved", summary.resolved as u64);
    }

    /// What each source has sent this replica (`GET /debug/signals`).
    pub fn signals_report(&self) -> SignalsReport<'_> {
        SignalsReport {
            sources: self.signal_stats.snapshot(),
            customerio_configured: self.customerio_configured(),
            alert_flag_label: &self.sources.alert_flag_label,
        }
    }

    /// Records a sample for a flag's current stage and has the push judge judge the flag.
    async fn ingest(&self, flag: &Flag, sample: &MetricSample) -> Result<Option<Outcome>, RolloutError> {
        self.rollouts.record_sample(flag, sample).await?;
        Ok(self.push_judge.after_push(flag).await)
    }

    /// [`Self::ingest`] at most once per `key` within [`EVENT_TTL`] (a webhook's delivery id).
    /// The key is marked before counting and unmarked when counting fails, so the sender's retry
    /// is counted.
    async fn ingest_once(&self, flag: &Flag, sample: &MetricSample, key: &str) -> Result<Ingested, RolloutError> {
        if !self.store.remember_once(key, EVENT_TTL).await? {
            return Ok(Ingested::Duplicate);
        }
        match self.ingest(flag, sample).await {
            Ok(outcome) => Ok(Ingested::Counted(outcome)),
            Err(e) => {
                if let Err(forget) = self.store.forget(key).await {
                    tracing::error!(key, error = %forget, flag = %flag.name,
                        "a delivery that was not counted stays marked as seen: its retries will be answered duplicate");
                }
                Err(e)
            }
        }
    }
}
