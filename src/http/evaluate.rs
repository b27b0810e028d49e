//! The hot path: `GET /flag/{user}` and `GET /flags/{flag}/users/{user}`, answered from the snapshot.

use super::openapi::ReadErrors;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;

use super::AppState;
use super::auth::Reader;
use super::error::{ApiError, ErrorBody};
use super::extract::{FlagUserParams, UserParam};
use super::json_response;
use std::time::Instant;

use crate::snapshot::FlagView;
use crate::telemetry::Telemetry;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/flag/{user}", get(default_flag))
        .route("/flag/", get(empty_user))
        .route("/flags/{flag}/users/{user}", get(flag_for_user))
        .route("/flags/{flag}/users/", get(empty_user_of_flag))
}

/// An empty user id is a client mistake, not an unknown route.
#[utoipa::path(get, path = "/flag/", tag = "evaluate", responses((status = 400, description = "the user id is empty", body = ErrorBody)))]
pub async fn empty_user() -> ApiError {
    ApiError::InvalidUser
}

/// An empty user id is a client mistake, not an unknown route.
#[utoipa::path(get, path = "/flags/{flag}/users/", tag = "evaluate", params(("flag" = String, Path, description = "flag name")), responses((status = 400, description = "the user id is empty", body = ErrorBody)))]
pub async fn empty_user_of_flag() -> ApiError {
    ApiError::InvalidUser
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EvaluationBody<'a> {
    pub flag: &'a str,
    pub user: &'a str,
    pub enabled: bool,
    pub bucket: u8,
    pub percent: u8,
    pub stage: &'a str,
    pub status: &'static str,
    pub version: u64,
    pub reason: &'static str,
}

fn answer(telemetry: &Telemetry, view: &FlagView, user: &str) -> Response {
    let started = Instant::now();
    let a = view.evaluate(user);
    telemetry.evaluation(a.evaluation.reason, started.elapsed());
    let body = EvaluationBody {
        flag: &view.flag.name,
        user,
        enabled: a.evaluation.enabled,
        bucket: a.bucket,
        percent: view.percent,
        stage: view.flag.stage_name(),
        status: view.flag.state.status.as_str(),
        version: view.flag.state.version,
        reason: a.evaluation.reason.as_str(),
    };
    json_response(&body)
}

#[utoipa::path(get, path = "/flag/{user}", tag = "evaluate", params(("user" = String, Path, description = "user id: 1–512 bytes of UTF-8")), security((), ("bearer" = []), ("api_key" = [])), responses((status = 200, description = "the default flag for this user", body = EvaluationBody), ReadErrors))]
pub async fn default_flag(
    _: Reader,
    State(state): State<AppState>,
    UserParam(user): UserParam,
) -> Result<Response, ApiError> {
    let view = state
        .rollouts
        .snapshot
        .get(&state.default_flag)
        .ok_or_else(|| ApiError::FlagNotFound(state.default_flag.to_string()))?;
    Ok(answer(&state.rollouts.telemetry, &view, &user))
}

#[utoipa::path(get, path = "/flags/{flag}/users/{user}", tag = "evaluate", params(("flag" = String, Path, description = "flag name", pattern = "^[A-Za-z0-9._-]{1,128}$"), ("user" = String, Path, description = "user id: 1–512 bytes of UTF-8")), security((), ("bearer" = []), ("api_key" = [])), responses((status = 200, description = "the flag for this user", body = EvaluationBody), ReadErrors))]
pub async fn flag_for_user(
    _: Reader,
    State(state): State<AppState>,
    FlagUserParams(flag, user): FlagUserParams,
) -> Result<Response, ApiError> {
    let view = state.rollouts.snapshot.get(&flag).ok_or(ApiError::FlagNotFound(flag))?;
    Ok(answer(&state.rollouts.telemetry, &view, &user))
}
