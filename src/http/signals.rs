//! Guard signals pushed by app services, and the guard verdicts they lead to.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Serialize;

use super::auth::{HealthReader, MetricsWriter};
use super::error::{ApiError, ReadErrors, WriteErrors};
use super::extract::{FlagParam, JsonBody};
use super::{AppState, json_response};
use crate::app::App;
use crate::app::flags::{GuardHealth, GuardHistory};
use crate::app::signals::PUSH;
use crate::clock::rfc3339;
use crate::domain::guards::{GuardPoint, GuardReading, MetricSample, SampleRatio};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/flags/{flag}/metrics", post(push))
        .route("/flags/{flag}/health", get(health))
        .route("/flags/{flag}/health/history", get(health_history))
}

#[derive(Serialize, utoipa::ToSchema)]
struct PushReply<'a> {
    flag: &'a str,
    recorded: bool,
    /// What the push caused at once: `rollback`, `pause` or nothing.
    action: Option<&'static str>,
    reason: Option<String>,
}

#[utoipa::path(
    post, path = "/flags/{flag}/metrics", tag = "guards",
    params(FlagParam),
    request_body(content = MetricSample),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "recorded; `action` says what it caused at once", body = PushReply),
        WriteErrors,
    )
)]
pub async fn push(
    _: MetricsWriter,
    State(app): State<Arc<App>>,
    FlagParam(name): FlagParam,
    body: Result<JsonBody<MetricSample>, ApiError>,
) -> Result<Response, ApiError> {
    let refused = |e: ApiError| {
        app.signal_refused(PUSH, e.code());
        e
    };
    let JsonBody(sample) = body.map_err(refused)?;
    sample.validate().map_err(|m| refused(ApiError::InvalidBody(m)))?;
    let outcome = app.push_metrics(&name, &sample).await?;
    let mut reply = PushReply { flag: &name, recorded: true, action: None, reason: None };
    if let Some(outcome) = outcome {
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

#[utoipa::path(
    get, path = "/flags/{flag}/health", tag = "guards",
    params(FlagParam),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "guard readings of the current stage", body = HealthReply), ReadErrors)
)]
pub async fn health(
    _: HealthReader,
    State(app): State<Arc<App>>,
    FlagParam(name): FlagParam,
) -> Result<Response, ApiError> {
    let GuardHealth { view, health, since_ms, waiting_for_evidence } = app.guard_health(&name).await?;
    let flag = &view.flag;
    Ok(json_response(&HealthReply {
        flag: &flag.name,
        status: flag.state.status.as_str(),
        stage: flag.stage_name(),
        since: rfc3339(since_ms),
        window_secs: flag.definition.window_secs,
        verdict: health.verdict.as_str(),
        guards: health.guards.iter().map(GuardBody::from).collect(),
        waiting_for_evidence,
        sample_ratio: health.sample_ratio,
        on_breach: flag.definition.on_breach,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct HistoryReply<'a> {
    flag: &'a str,
    stage: &'a str,
    /// When the current stage was entered: the readings cover the stage from here when the
    /// first one is near it.
    stage_entered_at: String,
    /// The leader's readings of this stage entry, oldest first: one per `max(window_secs / 30, 5 s)`
    /// at most, thinned to every other one past 720.
    readings: Vec<ReadingBody<'a>>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ReadingBody<'a> {
    /// When the leader judged the guards.
    at: String,
    guards: &'a [GuardPoint],
}

#[utoipa::path(
    get, path = "/flags/{flag}/health/history", tag = "guards",
    params(FlagParam),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the guard readings the leader took over the current stage", body = HistoryReply),
        ReadErrors,
    )
)]
pub async fn health_history(
    _: HealthReader,
    State(app): State<Arc<App>>,
    FlagParam(name): FlagParam,
) -> Result<Response, ApiError> {
    let GuardHistory { view, points } = app.guard_history(&name).await?;
    let flag = &view.flag;
    Ok(json_response(&HistoryReply {
        flag: &flag.name,
        stage: flag.stage_name(),
        stage_entered_at: rfc3339(flag.state.stage_entered_at),
        readings: points.iter().map(|p| ReadingBody { at: rfc3339(p.at), guards: &p.guards }).collect(),
    }))
}
