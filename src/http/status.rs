//! `GET /admin/status`: what `rollout doctor` audits (see [`crate::app::status`]). Admin only; a
//! secret never appears beyond its first 4 characters.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

use super::auth::Admin;
use super::error::ReadErrors;
use super::{AppState, json_response};
use crate::app::App;
use crate::app::status::StatusReply;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/status", get(status))
}

#[utoipa::path(
    get, path = "/admin/status", tag = "ops",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "what `rollout doctor` audits", body = StatusReply), ReadErrors)
)]
pub async fn status(_: Admin, State(app): State<Arc<App>>) -> Response {
    json_response(&app.status().await)
}
