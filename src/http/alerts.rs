//! `POST /alerts/alertmanager`: a firing alert labelled with a flag rolls that flag back at once.

use super::openapi::WriteErrors;
use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::post;
use serde::Serialize;

use super::auth::Scope;
use super::error::ApiError;
use super::extract::JsonBody;
use super::{AppState, json_response};
use crate::domain::plan::valid_flag_name;
use crate::rollouts::{AlertOutcome, Request, RolloutError};
use crate::sources::alertmanager::{MAX_ALERTS, Payload};

const SOURCE: &str = "alertmanager";

pub fn routes() -> Router<AppState> {
    Router::new().route("/alerts/alertmanager", post(alertmanager))
}

/// An alert sender: an alerts or admin token.
pub struct AlertSender;

impl FromRequestParts<AppState> for AlertSender {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let result = state.auth.require(&parts.headers, &[Scope::Alerts], "post alerts");
        if let Err(e) = &result {
            state.signals.received(SOURCE, state.rollouts.clock.now_ms());
            state.signals.rejected(SOURCE, e.code());
        }
        result.map(|_| AlertSender)
    }
}

/// What a payload did, reported back (and visible in Alertmanager's logs on errors).
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
struct Summary {
    alerts: usize,
    firing: usize,
    resolved: usize,
    rolled_back: Vec<String>,
    already_off: Vec<String>,
    duplicates: usize,
    unknown_flags: Vec<String>,
    without_flag: usize,
}

#[utoipa::path(post, path = "/alerts/alertmanager", tag = "sources", request_body(content = Payload, description = "Alertmanager webhook payload, version 4"), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "what the alerts did", body = Summary), WriteErrors))]
pub async fn alertmanager(
    _: AlertSender,
    State(state): State<AppState>,
    body: Result<JsonBody<Payload>, ApiError>,
) -> Result<Response, ApiError> {
    let stats = &state.signals;
    let rollouts = &state.rollouts;
    stats.received(SOURCE, rollouts.clock.now_ms());
    let JsonBody(payload) = body.inspect_err(|e| stats.rejected(SOURCE, e.code()))?;
    if payload.alerts.len() > MAX_ALERTS {
        stats.rejected(SOURCE, "too_many_alerts");
        return Err(ApiError::InvalidBody(format!("alerts: at most {MAX_ALERTS} per payload")));
    }
    let label = state.sources.alert_flag_label.as_str();
    let mut summary = Summary { alerts: payload.alerts.len(), ..Summary::default() };
    for alert in &payload.alerts {
        let Some(flag) = alert.flag(label) else {
            summary.without_flag += 1;
            continue;
        };
        let Some(view) = valid_flag_name(flag).then(|| rollouts.snapshot.get(flag)).flatten() else {
            summary.unknown_flags.push(flag.chars().take(128).collect());
            continue;
        };
        if alert.is_firing() {
            summary.firing += 1;
            let req = Request { cause: Some("alert".into()), ..Request::new("alert", alert.reason()) };
            match rollouts.alert_rollback(flag, &alert.episode(), &req).await {
                Ok(AlertOutcome::RolledBack) => summary.rolled_back.push(flag.to_owned()),
                Ok(AlertOutcome::AlreadyOff) => summary.already_off.push(flag.to_owned()),
                Ok(AlertOutcome::Duplicate) => summary.duplicates += 1,
                Err(RolloutError::NotFound(_)) => summary.unknown_flags.push(flag.to_owned()),
                // Alertmanager retries the payload: nothing of this alert was remembered.
                Err(e) => return Err(e.into()),
            }
        } else {
            summary.resolved += 1;
            let reason = format!("{} (resolved)", alert.reason());
            if !rollouts.alert_resolved(&view.flag, &alert.episode(), &reason).await? {
                summary.duplicates += 1;
            }
        }
    }
    stats.accepted(SOURCE);
    stats.count(SOURCE, "rollbacks", summary.rolled_back.len() as u64);
    stats.count(SOURCE, "duplicates", summary.duplicates as u64);
    stats.count(SOURCE, "unknown_flag", summary.unknown_flags.len() as u64);
    stats.count(SOURCE, "without_flag", summary.without_flag as u64);
    stats.count(SOURCE, "resolved", summary.resolved as u64);
    Ok(json_response(&summary))
}
