//! `GET /debug/signals`: what each guard signal source has sent this replica, and what was rejected.

use super::openapi::ReadErrors;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

use super::auth::Admin;
use super::{AppState, json_response};
use crate::clock::rfc3339;

pub fn routes() -> Router<AppState> {
    Router::new().route("/debug/signals", get(signals))
}

#[utoipa::path(get, path = "/debug/signals", tag = "ops", security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "per source: last payload, counts, rejects", body = Object), ReadErrors))]
pub async fn signals(_: Admin, State(state): State<AppState>) -> Response {
    let sources: serde_json::Map<String, serde_json::Value> = state
        .signals
        .snapshot()
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
        "customerio_configured": !state.sources.cio_signing_keys.is_empty(),
        "alert_flag_label": state.sources.alert_flag_label,
        "sources": sources,
    }))
}
