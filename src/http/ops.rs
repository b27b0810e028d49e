//! Liveness and readiness for load balancers and Kubernetes; Prometheus metrics.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::openapi::ReadErrors;
use super::signals::HealthReader;
use super::{AppState, json_response};

pub fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "the process is alive", body = Object)))]
pub async fn healthz() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#).into_response()
}

/// `GET /readyz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ReadyBody {
    /// `ready` or `degraded`.
    pub status: &'static str,
    /// `redis` or `memory`.
    pub store: &'static str,
    /// Flags in this replica's snapshot.
    pub flags: usize,
    /// Why it is degraded.
    pub reason: Option<String>,
}

/// 200 when the store answers and the snapshot is fresh; 503 with the reason otherwise.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, description = "store reachable, snapshot fresh", body = ReadyBody), (status = 503, description = "degraded: evaluations continue from the snapshot", body = ReadyBody)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let snapshot = &state.rollouts.snapshot;
    let body = |status: &'static str, reason: Option<String>| ReadyBody {
        status,
        store: state.rollouts.store.kind(),
        flags: snapshot.len(),
        reason,
    };
    match snapshot.readiness(state.max_snapshot_age) {
        Ok(()) => json_response(&body("ready", None)),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, json_response(&body("degraded", Some(why)))).into_response(),
    }
}

/// Prometheus text exposition of this replica's metrics (a metrics, read or admin token: it
/// names every flag).
#[utoipa::path(get, path = "/metrics", tag = "ops", security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String), ReadErrors))]
pub async fn metrics(_: HealthReader, State(state): State<AppState>) -> Response {
    let text = state.rollouts.telemetry.render(&state.rollouts.snapshot);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
