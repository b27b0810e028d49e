//! `GET /debug/signals`: what each guard signal source has sent this replica, and what was rejected.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

use super::auth::Admin;
use super::error::ReadErrors;
use super::{AppState, json_response};
use crate::app::App;
use crate::clock::rfc3339;

pub fn routes() -> Router<AppState> {
    Router::new().route("/debug/signals", get(signals))
}

#[utoipa::path(
    get, path = "/debug/signals", tag = "ops",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "per source: last payload, counts, rejects", body = Object), ReadErrors)
)]
pub async fn signals(_: Admin, State(app): State<Arc<App>>) -> Response {
    let report = app.signals_report();
    let sources: serde_json::Map<String, serde_json::Value> = report
        .sources
        .into_iter()
        .map(|(name, s)| {
            let value = serde_json::json!({
                "last_received_at": s.last_received_at.map(rfc3339),
                "received": s.received,
                "accepted": s.accepted,
                "rejected": s.rejected,
                "counts": s.counts,
            });
            (name.to_owned(), value)
        })
        .collect();
    json_response(&serde_json::json!({
        "replica": "this",
        "customerio_configured": report.customerio_configured,
        "alert_flag_label": report.alert_flag_label,
        "sources": sources,
    }))
}
