//! The runbook's timeline: start now or at a time, cancel a scheduled start, approve a stage,
//! read a flag's checks, the emergency stop (`rollback-all`) and the controller freeze. Admin
//! tokens for every change; the freeze is readable with a read token.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::AppState;
use super::admin::{FlagBody, MAX_REASON};
use super::auth::{Admin, AuditReader};
use super::error::{ApiError, ReadErrors, WriteErrors};
use super::extract::{FlagParam, JsonBody};
use super::json_response;
use crate::app::App;
use crate::clock::rfc3339;
use crate::rollouts::Request;
use crate::timeline::{CheckRun, Freeze, Stopped, Timeline};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/flags/{flag}/start", post(start))
        .route("/flags/{flag}/approve", post(approve))
        .route("/flags/{flag}/checks", get(checks))
        .route("/rollback-all", post(rollback_all))
        .route("/freeze", get(frozen).post(freeze))
        .route("/unfreeze", post(unfreeze))
}

/// `POST /flags/{flag}/start`: now, or at `at` (RFC 3339).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    pub reason: Option<String>,
    pub expected_version: Option<u64>,
    /// Start at this time (RFC 3339, in the future, at most a year ahead): the flag is `scheduled`.
    pub at: Option<String>,
}

/// `POST /flags/{flag}/approve`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    pub stage: String,
    pub reason: Option<String>,
}

/// A reason is required: the emergency stop and the freeze are audited by it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    pub reason: String,
}

fn reason(text: Option<String>, default: &str) -> Result<String, ApiError> {
    let text = text.unwrap_or_else(|| default.to_owned());
    if text.trim().is_empty() || text.len() > MAX_REASON {
        return Err(ApiError::InvalidBody(format!("reason: 1 to {MAX_REASON} bytes")));
    }
    Ok(text)
}

#[utoipa::path(post, path = "/flags/{flag}/start", tag = "timeline",
    params(FlagParam),
    request_body(content = Option<StartBody>, description = "optional; `at` schedules the start"),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "running (its `before_start` checks passed), or scheduled",
        body = FlagBody), WriteErrors))]
pub async fn start(
    admin: Admin,
    State(app): State<Arc<App>>,
    FlagParam(flag): FlagParam,
    JsonBody(body): JsonBody<StartBody>,
) -> Result<Response, ApiError> {
    let at = match &body.at {
        Some(text) => Some(
            text.parse::<jiff::Timestamp>()
                .map_err(|_| ApiError::InvalidBody(format!("at: {text:?} is not an RFC 3339 time")))?
                .as_millisecond(),
        ),
        None => None,
    };
    let default = if at.is_some() { "start scheduled" } else { "start requested" };
    let req = Request {
        expected_version: body.expected_version,
        ..Request::new(admin.actor(), reason(body.reason, default)?)
    };
    let flag = app.start(&flag, at, &req).await?;
    Ok(json_response(&FlagBody::new(&flag, app.now_ms())))
}

#[utoipa::path(post, path = "/flags/{flag}/approve", tag = "timeline",
    params(FlagParam),
    request_body(content = ApproveBody),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "the approval recorded", body = FlagBody), WriteErrors))]
pub async fn approve(
    admin: Admin,
    State(app): State<Arc<App>>,
    FlagParam(flag): FlagParam,
    JsonBody(body): JsonBody<ApproveBody>,
) -> Result<Response, ApiError> {
    let req = Request::new(admin.actor(), reason(body.reason, "approved")?);
    let flag = app.approve(&flag, &body.stage, &req).await?;
    Ok(json_response(&FlagBody::new(&flag, app.now_ms())))
}

/// One check of a flag: its definition's name and when, its latest run, its next run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckBody {
    pub name: String,
    pub when: String,
    pub url: String,
    pub last_run: Option<CheckRun>,
    /// When the leader runs it next (absent when it is not due in the flag's present state).
    pub next_run: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChecksBody {
    pub flag: String,
    pub checks: Vec<CheckBody>,
}

#[utoipa::path(get, path = "/flags/{flag}/checks", tag = "timeline",
    params(FlagParam),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "each check's last run, result, latency and next run",
        body = ChecksBody), ReadErrors))]
pub async fn checks(_: Admin, State(app): State<Arc<App>>, FlagParam(name): FlagParam) -> Result<Response, ApiError> {
    let (view, runs) = app.checks(&name).await?;
    let flag = &view.flag;
    let checks = flag
        .definition
        .checks
        .iter()
        .map(|check| {
            let last = runs.iter().find(|r| r.check == check.name).cloned();
            let next = Timeline::next_run(flag, check, last.as_ref());
            CheckBody {
                name: check.name.clone(),
                when: serde_json::to_value(&check.when)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                url: crate::notify::redact(&check.url),
                last_run: last,
                next_run: next.map(rfc3339),
            }
        })
        .collect();
    Ok(json_response(&ChecksBody { flag: name, checks }))
}

#[utoipa::path(post, path = "/rollback-all", tag = "timeline", request_body(content = ReasonBody),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "every running, paused and scheduled flag stopped, under one incident id",
        body = Stopped), WriteErrors))]
pub async fn rollback_all(
    admin: Admin,
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Response, ApiError> {
    let req = Request { cause: Some("operator".into()), ..Request::new(admin.actor(), reason(Some(body.reason), "")?) };
    Ok(json_response(&app.rollback_all(&req).await?))
}

/// `GET /freeze`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FreezeBody {
    pub frozen: bool,
    pub by: Option<String>,
    pub at: Option<String>,
    pub reason: Option<String>,
}

impl From<Option<Freeze>> for FreezeBody {
    fn from(f: Option<Freeze>) -> Self {
        match f {
            Some(f) => Self { frozen: true, by: Some(f.by), at: Some(rfc3339(f.at)), reason: Some(f.reason) },
            None => Self { frozen: false, by: None, at: None, reason: None },
        }
    }
}

#[utoipa::path(get, path = "/freeze", tag = "timeline", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "whether automatic advances and starts are frozen, by whom, when, why",
        body = FreezeBody), ReadErrors))]
pub async fn frozen(_: AuditReader, State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    Ok(json_response(&FreezeBody::from(app.frozen().await?)))
}

#[utoipa::path(post, path = "/freeze", tag = "timeline", request_body(content = ReasonBody),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "frozen on every replica; rollbacks still happen", body = FreezeBody),
        WriteErrors))]
pub async fn freeze(
    admin: Admin,
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Response, ApiError> {
    let freeze = app.freeze(&admin.actor(), &reason(Some(body.reason), "")?).await?;
    Ok(json_response(&FreezeBody::from(Some(freeze))))
}

#[utoipa::path(post, path = "/unfreeze", tag = "timeline", request_body(content = ReasonBody),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "automatic advances and starts resume", body = FreezeBody), WriteErrors))]
pub async fn unfreeze(
    admin: Admin,
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Response, ApiError> {
    app.unfreeze(&admin.actor(), &reason(Some(body.reason), "")?).await?;
    Ok(json_response(&FreezeBody::from(None)))
}
