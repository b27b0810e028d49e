//! Liveness and readiness for load balancers and Kubernetes; Prometheus metrics.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{AppState, json_response};

pub fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

async fn healthz() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#).into_response()
}

/// 200 when the store answers and the snapshot is fresh; 503 with the reason otherwise.
async fn readyz(State(state): State<AppState>) -> Response {
    let snapshot = &state.rollouts.snapshot;
    let body = |status: &str, reason: Option<String>| {
        serde_json::json!({
            "status": status,
            "store": state.rollouts.store.kind(),
            "flags": snapshot.len(),
            "reason": reason,
        })
    };
    match snapshot.readiness(state.max_snapshot_age) {
        Ok(()) => json_response(&body("ready", None)),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, json_response(&body("degraded", Some(why)))).into_response(),
    }
}

/// Prometheus text exposition of this replica's metrics.
async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.rollouts.telemetry.render(&state.rollouts.snapshot);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
