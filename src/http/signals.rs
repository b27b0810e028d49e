//! Guard signals pushed by app services, and the guard verdicts they lead to.

use super::openapi::{ReadErrors, WriteErrors};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Serialize;

use super::auth::{Principal, Scope};
use super::error::ApiError;
use super::extract::{FlagParam, JsonBody};
use super::{AppState, json_response};
use crate::clock::rfc3339;
use crate::controller;
use crate::domain::guards::{GuardReading, MetricSample, SampleRatio};
use crate::domain::rollout::Flag;
use crate::rollouts::Rollouts;

pub fn routes() -> Router<AppState> {
    Router::new().route("/flags/{flag}/metrics", post(push)).route("/flags/{flag}/health", get(health))
}

/// A caller allowed to push metrics: an admin or metrics token.
pub struct MetricsWriter(pub Principal);

impl FromRequestParts<AppState> for MetricsWriter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.require(&parts.headers, &[Scope::Metrics], "push metrics").map(MetricsWriter)
    }
}

/// A caller allowed to read guard health: admin, metrics or read tokens.
pub struct HealthReader;

impl FromRequestParts<AppState> for HealthReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.require(&parts.headers, &[Scope::Metrics, Scope::Read], "read guard health").map(|_| HealthReader)
    }
}

/// Pushes judge the flag at once, but at most once per `min_gap` per flag; a push inside the gap
/// schedules one judgement at its end, so a breach is never left for the next controller tick.
pub struct PushChecks {
    min_gap: Duration,
    state: Mutex<HashMap<String, (Instant, bool)>>,
}

enum Check {
    Now,
    Later(Duration),
    AlreadyScheduled,
}

impl PushChecks {
    pub fn new(min_gap: Duration) -> Self {
        Self { min_gap, state: Mutex::new(HashMap::new()) }
    }

    fn plan(&self, flag: &str) -> Check {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if state.len() > 10_000 {
            state.retain(|_, (at, scheduled)| *scheduled || now.duration_since(*at) < self.min_gap);
        }
        match state.get_mut(flag) {
            Some((at, scheduled)) if now.duration_since(*at) < self.min_gap => {
                if *scheduled {
                    Check::AlreadyScheduled
                } else {
                    *scheduled = true;
                    Check::Later(self.min_gap - now.duration_since(*at))
                }
            }
            _ => {
                state.insert(flag.to_owned(), (now, false));
                Check::Now
            }
        }
    }

    fn done_later(&self, flag: &str) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.insert(flag.to_owned(), (Instant::now(), false));
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct PushReply<'a> {
    flag: &'a str,
    recorded: bool,
    /// What the push caused at once: `rollback`, `pause` or nothing.
    action: Option<&'static str>,
    reason: Option<String>,
}

async fn judge_now(rollouts: &Rollouts, flag: &Flag) -> Option<controller::Outcome> {
    match controller::judge(rollouts, flag, false).await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::warn!(flag = %flag.name, error = %e, "could not judge the flag after a metrics push");
            None
        }
    }
}

/// Records a sample for a flag's current stage and judges the flag at once (within the push
/// gap); returns what the judgement did. Shared by metrics pushes and the Customer.io webhook.
pub async fn ingest(
    state: &AppState,
    flag: &Flag,
    sample: &MetricSample,
) -> Result<Option<controller::Outcome>, ApiError> {
    let rollouts = &state.rollouts;
    let series = flag.metric_series().of(sample.cohort);
    rollouts.store.record_metrics(&flag.name, &series, rollouts.clock.now_ms(), sample).await.inspect_err(|_| {
        rollouts.telemetry.store_error();
    })?;
    match state.push_checks.plan(&flag.name) {
        Check::Now => return Ok(judge_now(rollouts, flag).await),
        Check::Later(wait) => {
            let (rollouts, checks, name) = (rollouts.clone(), state.push_checks.clone(), flag.name.clone());
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                checks.done_later(&name);
                if let Some(view) = rollouts.snapshot.get(&name) {
                    judge_now(&rollouts, &view.flag).await;
                }
            });
        }
        Check::AlreadyScheduled => {}
    }
    Ok(None)
}

/// What [`ingest_once`] did with a sample.
pub enum Ingested {
    /// Counted (and judged: what that caused at once).
    Counted(Option<controller::Outcome>),
    /// Its key was seen before: counted already.
    Duplicate,
}

/// [`ingest`] at most once per `key` within `ttl` (a webhook's delivery id). The key is marked
/// before counting and unmarked when counting fails, so the sender's retry is counted.
pub async fn ingest_once(
    state: &AppState,
    flag: &Flag,
    sample: &MetricSample,
    key: &str,
    ttl: Duration,
) -> Result<Ingested, ApiError> {
    let store = &state.rollouts.store;
    if !store.remember_once(key, ttl).await? {
        return Ok(Ingested::Duplicate);
    }
    match ingest(state, flag, sample).await {
        Ok(outcome) => Ok(Ingested::Counted(outcome)),
        Err(e) => {
            if let Err(forget) = store.forget(key).await {
                tracing::error!(key, error = %forget, flag = %flag.name,
                    "a delivery that was not counted stays marked as seen: its retries will be answered duplicate");
            }
            Err(e)
        }
    }
}

#[utoipa::path(post, path = "/flags/{flag}/metrics", tag = "guards", params(("flag" = String, Path, description = "flag name", pattern = "^[A-Za-z0-9._-]{1,128}$")), request_body(content = MetricSample), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "recorded; `action` says what it caused at once", body = PushReply), WriteErrors))]
pub async fn push(
    _: MetricsWriter,
    State(state): State<AppState>,
    FlagParam(name): FlagParam,
    body: Result<JsonBody<MetricSample>, ApiError>,
) -> Result<Response, ApiError> {
    let stats = &state.signals;
    stats.received("push", state.rollouts.clock.now_ms());
    let rejected = |e: ApiError| {
        stats.rejected("push", e.code());
        e
    };
    let JsonBody(sample) = body.map_err(rejected)?;
    sample.validate().map_err(|m| rejected(ApiError::InvalidBody(m)))?;
    let view = state.rollouts.snapshot.get(&name).ok_or_else(|| rejected(ApiError::FlagNotFound(name.clone())))?;
    let outcome = ingest(&state, &view.flag, &sample).await?;
    stats.accepted("push");
    let mut reply = PushReply { flag: &name, recorded: true, action: None, reason: None };
    if let Some(outcome) = outcome {
        stats.count("push", outcome.command.as_str(), 1);
        reply.action = Some(outcome.command.as_str());
        reply.reason = Some(outcome.reason);
    }
    Ok(json_response(&reply))
}

#[derive(Serialize, utoipa::ToSchema)]
struct HealthReply<'a> {
    flag: &'a str,
    status: &'static str,
    stage: &'a str,
    /// The window counts only since this stage began.
    since: String,
    window_secs: u64,
    verdict: &'static str,
    guards: Vec<GuardBody>,
    /// Treatment's share of requests against the share the stage serves (both cohorts reported).
    #[serde(skip_serializing_if = "Option::is_none")]
    sample_ratio: Option<SampleRatio>,
    /// The soak is over but these guards are still inconclusive: the flag holds for evidence.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    waiting_for_evidence: Vec<&'static str>,
    on_breach: crate::domain::plan::OnBreach,
}

#[derive(Serialize, utoipa::ToSchema)]
struct GuardBody {
    #[serde(flatten)]
    reading: GuardReading,
    breaches_when: &'static str,
    /// `error_rate 0.034 [0.021, 0.052] > 0.01 at 95% over 1204 requests`
    summary: String,
}

impl From<&GuardReading> for GuardBody {
    fn from(r: &GuardReading) -> Self {
        Self {
            reading: r.clone(),
            breaches_when: if r.guard.breaches_below() { "below" } else { "above" },
            summary: r.describe(),
        }
    }
}

#[utoipa::path(get, path = "/flags/{flag}/health", tag = "guards", params(("flag" = String, Path, description = "flag name", pattern = "^[A-Za-z0-9._-]{1,128}$")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "guard readings of the current stage", body = HealthReply), ReadErrors))]
pub async fn health(
    _: HealthReader,
    State(state): State<AppState>,
    FlagParam(name): FlagParam,
) -> Result<Response, ApiError> {
    let view = state.rollouts.snapshot.get(&name).ok_or_else(|| ApiError::FlagNotFound(name.clone()))?;
    let flag = &view.flag;
    let health = state.rollouts.health(flag).await?;
    let now = state.rollouts.clock.now_ms();
    let window_ms = i64::try_from(flag.definition.window_secs * 1000).unwrap_or(i64::MAX);
    Ok(json_response(&HealthReply {
        flag: &flag.name,
        status: flag.state.status.as_str(),
        stage: flag.stage_name(),
        since: rfc3339((now - window_ms).max(flag.state.stage_entered_at)),
        window_secs: flag.definition.window_secs,
        verdict: health.verdict.as_str(),
        guards: health.guards.iter().map(GuardBody::from).collect(),
        waiting_for_evidence: controller::waiting_for_evidence(flag, &health, now),
        sample_ratio: health.sample_ratio,
        on_breach: flag.definition.on_breach,
    }))
}
