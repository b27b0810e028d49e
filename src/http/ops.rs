//! Liveness and readiness for load balancers and Kubernetes (and the drain that precedes a
//! shutdown); Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::auth::HealthReader;
use super::error::ReadErrors;
use super::{AppState, json_response};
use crate::app::App;
use crate::app::status::Readiness;

pub fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

#[utoipa::path(
    get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "the process is alive", body = Object))
)]
pub async fn healthz() -> Response {
    // A static header value: a `&str` would be checked byte by byte on every request.
    ([(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], r#"{"status":"ok"}"#)
        .into_response()
}

/// Set when the process is told to stop: from then on `/readyz` answers 503 `draining`, so load
/// balancers take this replica out before it closes its listener; every other route still serves.
#[derive(Debug, Default)]
pub struct Drain(AtomicBool);

impl Drain {
    pub fn start(&self) {
        // Whether it was draining already does not matter.
        self.0.swap(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `GET /readyz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ReadyBody {
    /// `ready`, `degraded` or `draining`.
    pub status: &'static str,
    /// `redis`, `redis-cluster` or `memory`.
    pub store: &'static str,
    /// Flags in this replica's snapshot.
    pub flags: usize,
    /// Why it is degraded.
    pub reason: Option<String>,
}

/// 200 when the store answers and the snapshot is fresh; 503 with the reason otherwise, and 503
/// `draining` once the process is shutting down.
#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "store reachable, snapshot fresh", body = ReadyBody),
        (
            status = 503, body = ReadyBody,
            description = "degraded (evaluations continue from the snapshot) or draining (shutting down: \
                everything else is still served until the listener closes)",
        ),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let Readiness { store, flags, degraded } = state.app.readiness();
    let body = |status: &'static str, reason: Option<String>| ReadyBody { status, store, flags, reason };
    if state.drain.is_draining() {
        let why = "shutting down: this replica stops taking connections at the end of the drain".to_owned();
        return (StatusCode::SERVICE_UNAVAILABLE, json_response(&body("draining", Some(why)))).into_response();
    }
    match degraded {
        None => json_response(&body("ready", None)),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, json_response(&body("degraded", Some(why)))).into_response(),
    }
}

/// Prometheus text exposition of this replica's metrics (a metrics, read or admin token: it
/// names every flag).
#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String),
        ReadErrors,
    )
)]
pub async fn metrics(_: HealthReader, State(app): State<Arc<App>>) -> Response {
    let text = app.metrics_text();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
