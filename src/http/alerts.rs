//! `POST /alerts/alertmanager`: a firing alert labelled with a flag rolls that flag back at once.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;

use super::auth::AlertSender;
use super::error::{ApiError, WriteErrors};
use super::extract::JsonBody;
use super::{AppState, json_response};
use crate::app::App;
use crate::app::signals::{ALERTMANAGER, AlertSummary};
use crate::sources::alertmanager::{MAX_ALERTS, Payload};

pub fn routes() -> Router<AppState> {
    Router::new().route("/alerts/alertmanager", post(alertmanager))
}

#[utoipa::path(
    post, path = "/alerts/alertmanager", tag = "sources",
    request_body(content = Payload, description = "Alertmanager webhook payload, version 4"),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "what the alerts did", body = AlertSummary), WriteErrors)
)]
pub async fn alertmanager(
    _: AlertSender,
    State(app): State<Arc<App>>,
    body: Result<JsonBody<Payload>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonBody(payload) = body.inspect_err(|e| app.signal_refused(ALERTMANAGER, e.code()))?;
    if payload.alerts.len() > MAX_ALERTS {
        app.signal_refused(ALERTMANAGER, "too_many_alerts");
        return Err(ApiError::InvalidBody(format!("alerts: at most {MAX_ALERTS} per payload")));
    }
    Ok(json_response(&app.apply_alerts(&payload).await?))
}
