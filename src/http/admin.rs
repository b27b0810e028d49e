//! Operator routes: define flags, drive their rollouts, read their history (admin token), and
//! the audit of deleted flags (a read token suffices).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::{Admin, AuditReader};
use super::error::{ApiError, ReadErrors, WriteErrors};
use super::extract::{ApiQuery, FlagParam, JsonBody};
use super::json_response;
use crate::app::App;
use crate::app::flags::{FlagAt, Listing, Shown};
use crate::clock::rfc3339;
use crate::domain::plan::FlagDefinition;
use crate::domain::rollout::{Approval, Command, Deletion, Flag, Position};
use crate::review::EventBody;
use crate::store::{DELETIONS_CAP, HISTORY_CAP};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/flags", get(list))
        .route("/flags/{flag}", get(show).put(put).delete(delete))
        .route("/flags/{flag}/advance", post(advance))
        .route("/flags/{flag}/pause", post(pause))
        .route("/flags/{flag}/cancel", post(cancel))
        .route("/flags/{flag}/resume", post(resume))
        .route("/flags/{flag}/rollback", post(rollback))
        .route("/flags/{flag}/history", get(history))
        .route("/deletions", get(deletions))
}

/// A flag as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FlagBody<'a> {
    pub name: &'a str,
    pub status: &'static str,
    pub stage: &'a str,
    pub stage_index: usize,
    pub percent: u8,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    pub stage_entered_at: String,
    /// Seconds since the current stage was entered, on the server's clock.
    pub in_stage_secs: i64,
    /// Seconds of soak left in the current stage while running.
    pub soak_remaining_secs: Option<i64>,
    /// The soak is over but these guards are still inconclusive: the controller holds the flag
    /// until the evidence decides (shown by `GET /flags/{flag}` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waiting_for_evidence: Vec<&'static str>,
    /// What else holds the flag: an approval, the advance window, a check, the freeze (shown by
    /// `GET /flags/{flag}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<crate::timeline::WaitingFor>,
    /// When a scheduled flag starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<String>,
    /// Approvals given to enter the next stage (`at` in Unix milliseconds); cleared on entering it.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub approvals: &'a [Approval],
    pub definition: &'a FlagDefinition,
}

impl<'a> FlagBody<'a> {
    pub fn new(flag: &'a Flag, now_ms: i64) -> Self {
        Self {
            name: &flag.name,
            status: flag.state.status.as_str(),
            stage: flag.stage_name(),
            stage_index: flag.state.stage_index,
            percent: flag.percent(),
            version: flag.state.version,
            created_at: rfc3339(flag.state.created_at),
            updated_at: rfc3339(flag.state.updated_at),
            stage_entered_at: rfc3339(flag.state.stage_entered_at),
            in_stage_secs: (now_ms - flag.state.stage_entered_at).max(0) / 1000,
            soak_remaining_secs: flag.soak_remaining_ms(now_ms).map(|ms| (ms + 999) / 1000),
            waiting_for_evidence: Vec::new(),
            waiting_for: None,
            scheduled_for: flag.state.scheduled_for.map(rfc3339),
            approvals: &flag.state.approvals,
            definition: &flag.definition,
        }
    }

    fn at(written: &'a FlagAt) -> Self {
        Self::new(&written.flag, written.now_ms)
    }
}

/// Optional body of a transition.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionBody {
    pub reason: Option<String>,
    pub expected_version: Option<u64>,
}

pub const MAX_REASON: usize = 1000;

/// `GET /flags`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FlagList<'a> {
    pub flags: Vec<FlagBody<'a>>,
}

/// `GET /flags/{flag}/history`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HistoryBody<'a> {
    pub flag: &'a str,
    pub events: Vec<EventBody<'a>>,
}

#[utoipa::path(
    get, path = "/flags", tag = "flags",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "every flag", body = FlagList), ReadErrors)
)]
pub async fn list(_: Admin, State(app): State<Arc<App>>) -> Response {
    let Listing { flags, now_ms } = app.list();
    json_response(&FlagList { flags: flags.iter().map(|v| FlagBody::new(&v.flag, now_ms)).collect() })
}

#[utoipa::path(
    get, path = "/flags/{flag}", tag = "flags",
    params(FlagParam),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "the flag", body = FlagBody), ReadErrors)
)]
pub async fn show(_: Admin, State(app): State<Arc<App>>, FlagParam(flag): FlagParam) -> Result<Response, ApiError> {
    let Shown { view, now_ms, waiting_for_evidence, waiting_for } = app.show(&flag).await?;
    Ok(json_response(&FlagBody { waiting_for_evidence, waiting_for, ..FlagBody::new(&view.flag, now_ms) }))
}

/// `PUT /flags/{flag}`'s query: the definition itself is the body, exactly as `GET` shows it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutQuery {
    expected_version: Option<u64>,
}

#[utoipa::path(
    put, path = "/flags/{flag}", tag = "flags",
    params(FlagParam, ("expected_version" = Option<u64>, Query,
        description = "refuse with 409 unless the flag is at this version (0: unless it does not exist yet)")),
    request_body(content = FlagDefinition, description = "every field optional; defaults are the runbook plan"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "updated", body = FlagBody),
        (status = 201, description = "created", body = FlagBody),
        WriteErrors,
    )
)]
pub async fn put(
    admin: Admin,
    State(app): State<Arc<App>>,
    FlagParam(flag): FlagParam,
    ApiQuery(query): ApiQuery<PutQuery>,
    JsonBody(definition): JsonBody<FlagDefinition>,
) -> Result<Response, ApiError> {
    let (saved, created) = app.define(&flag, definition, admin.actor(), query.expected_version).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, json_response(&FlagBody::at(&saved))).into_response())
}

/// Optional body of a deletion (the reason may come in the query instead).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    reason: Option<String>,
}

#[utoipa::path(
    delete, path = "/flags/{flag}", tag = "flags",
    params(FlagParam, ("reason" = Option<String>, Query, description = "why, for the deletion audit (or in the body)")),
    request_body(content = Option<DeleteBody>, description = "optional"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "deleted with its history; the deletion is recorded in `GET /deletions`"),
        WriteErrors,
    )
)]
pub async fn delete(
    admin: Admin,
    State(app): State<Arc<App>>,
    FlagParam(flag): FlagParam,
    ApiQuery(query): ApiQuery<DeleteQuery>,
    JsonBody(body): JsonBody<DeleteBody>,
) -> Result<StatusCode, ApiError> {
    let reason = match (query.reason, body.reason) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidBody("reason: give it in the query or in the body, not both".into()));
        }
        (Some(reason), None) | (None, Some(reason)) => reason,
        (None, None) => "delete requested".to_owned(),
    };
    if reason.len() > MAX_REASON {
        return Err(ApiError::InvalidBody(format!("reason: at most {MAX_REASON} bytes")));
    }
    app.delete(&flag, admin.actor(), reason).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn transition(
    app: &App,
    admin: Admin,
    flag: String,
    command: Command,
    body: TransitionBody,
) -> Result<Response, ApiError> {
    let reason = body.reason.unwrap_or_else(|| format!("{} requested", command.as_str()));
    if reason.len() > MAX_REASON {
        return Err(ApiError::InvalidBody(format!("reason: at most {MAX_REASON} bytes")));
    }
    let moved = app.command(&flag, command, admin.actor(), reason, body.expected_version).await?;
    Ok(json_response(&FlagBody::at(&moved)))
}

macro_rules! transition_handler {
    ($name:ident, $command:expr, $path:literal, $what:literal) => {
        #[doc = $what]
        #[utoipa::path(
                            post, path = $path, tag = "flags",
                            params(FlagParam),
                            request_body(content = Option<TransitionBody>, description = "optional"),
                            security(("bearer" = []), ("api_key" = [])),
                            responses((status = 200, description = "the new state", body = FlagBody), WriteErrors)
                        )]
        pub async fn $name(
            admin: Admin,
            State(app): State<Arc<App>>,
            FlagParam(flag): FlagParam,
            JsonBody(body): JsonBody<TransitionBody>,
        ) -> Result<Response, ApiError> {
            transition(&app, admin, flag, $command, body).await
        }
    };
}

transition_handler!(
    advance,
    Command::Advance,
    "/flags/{flag}/advance",
    "Skips the rest of the soak: next stage, or completed."
);
transition_handler!(cancel, Command::Cancel, "/flags/{flag}/cancel", "Calls off a scheduled start: pending again.");
transition_handler!(pause, Command::Pause, "/flags/{flag}/pause", "Holds the percentage (guards still roll back).");
transition_handler!(
    resume,
    Command::Resume,
    "/flags/{flag}/resume",
    "Resumes a pause, or restarts a rolled-back plan at its first percentage stage."
);
transition_handler!(rollback, Command::Rollback, "/flags/{flag}/rollback", "0% for everyone at once; wins every race.");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    limit: Option<usize>,
}

#[utoipa::path(
    get, path = "/flags/{flag}/history", tag = "flags",
    params(FlagParam, ("limit" = Option<usize>, Query, description = "1–10000, default 100")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "audit events, newest first", body = HistoryBody), ReadErrors)
)]
pub async fn history(
    _: Admin,
    State(app): State<Arc<App>>,
    FlagParam(flag): FlagParam,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=HISTORY_CAP).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!("limit must be between 1 and {HISTORY_CAP}")));
    }
    let events = app.history(&flag, limit).await?;
    let events: Vec<EventBody> = events.iter().map(EventBody::from).collect();
    Ok(json_response(&HistoryBody { flag: &flag, events }))
}

/// A deletion as the API shows it: who deleted which flag, when and why, and where the flag stood.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeletionBody<'a> {
    pub flag: &'a str,
    pub at: String,
    pub actor: &'a str,
    pub reason: &'a str,
    /// The flag's last version.
    pub version: u64,
    /// Where the flag stood when it was deleted.
    pub last: &'a Position,
    /// When the deleted incarnation of the flag was created.
    pub created_at: String,
}

impl<'a> From<&'a Deletion> for DeletionBody<'a> {
    fn from(d: &'a Deletion) -> Self {
        Self {
            flag: &d.flag,
            at: rfc3339(d.at),
            actor: &d.actor,
            reason: &d.reason,
            version: d.version,
            last: &d.last,
            created_at: rfc3339(d.created_at),
        }
    }
}

/// `GET /deletions`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeletionsBody<'a> {
    pub deletions: Vec<DeletionBody<'a>>,
}

#[utoipa::path(
    get, path = "/deletions", tag = "flags",
    params(("limit" = Option<usize>, Query, description = "1–10000, default 100")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "deleted flags, newest first: the audit that outlives them", body = DeletionsBody),
        ReadErrors,
    )
)]
pub async fn deletions(
    _: AuditReader,
    State(app): State<Arc<App>>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=DELETIONS_CAP).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!("limit must be between 1 and {DELETIONS_CAP}")));
    }
    let records = app.deletions(limit).await?;
    Ok(json_response(&DeletionsBody { deletions: records.iter().map(DeletionBody::from).collect() }))
}
