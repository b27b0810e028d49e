//! The API's one error type and its JSON shape: `{"error": "<code>", "message": "<text>"}`; and
//! the sets of error responses the handlers' OpenAPI annotations list ([`ReadErrors`],
//! [`WriteErrors`]).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::IntoResponses;

use crate::domain::plan::DefinitionError;
use crate::domain::rollout::TransitionError;
use crate::rollouts::RolloutError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("flag names are 1–128 characters of A-Z a-z 0-9 . _ -, other than \".\", \"..\" and \"config\"")]
    InvalidFlagName,
    #[error("user ids are 1–512 bytes of UTF-8")]
    InvalidUser,
    #[error("{0}")]
    InvalidQuery(String),
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("expected Content-Type: application/json, got {0:?}")]
    UnsupportedMediaType(String),
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("a batch takes at most {max} user ids; this one has {sent}")]
    TooManyUsers { max: usize, sent: usize },
    #[error("{0}")]
    InvalidBody(String),
    #[error("{0}")]
    InvalidDefinition(#[from] DefinitionError),
    #[error("no flag named {0:?}")]
    FlagNotFound(String),
    #[error("no route {0}")]
    RouteNotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("missing or unknown token: send Authorization: Bearer <token>")]
    Unauthorized,
    #[error("this token may not {0}")]
    Forbidden(&'static str),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("the flag is at version {found}, not the expected {expected}")]
    VersionConflict { expected: u64, found: u64 },
    #[error("the flag kept changing under this request; try again")]
    Contended,
    #[error("the state store is unreachable; evaluations continue from the last snapshot, changes are refused")]
    StoreUnavailable(#[source] StoreError),
    #[error("the request took too long")]
    Timeout,
    #[error(transparent)]
    TooManyStreams(#[from] crate::app::clients::TooManyStreams),
    #[error("check {check} failed: {detail}")]
    CheckFailed { check: String, detail: String },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidFlagName
            | ApiError::InvalidUser
            | ApiError::InvalidQuery(_)
            | ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) | ApiError::TooManyUsers { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidBody(_) | ApiError::InvalidDefinition(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::FlagNotFound(_) | ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Transition(_)
            | ApiError::VersionConflict { .. }
            | ApiError::Contended
            | ApiError::CheckFailed { .. } => StatusCode::CONFLICT,
            ApiError::StoreUnavailable(_) | ApiError::TooManyStreams(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidFlagName => "invalid_flag_name",
            ApiError::InvalidUser => "invalid_user",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) | ApiError::TooManyUsers { .. } => "payload_too_large",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::InvalidDefinition(_) => "invalid_definition",
            ApiError::FlagNotFound(_) => "flag_not_found",
            ApiError::RouteNotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Transition(TransitionError::Invalid { .. }) => "invalid_transition",
            ApiError::Transition(TransitionError::StageRemoved { .. }) => "stage_removed",
            ApiError::Transition(TransitionError::NotSchedulable { .. }) => "invalid_transition",
            ApiError::Transition(TransitionError::NoApprovalAwaited { .. }) => "no_approval_awaited",
            ApiError::VersionConflict { .. } => "version_conflict",
            ApiError::Contended => "contended",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::Timeout => "request_timeout",
            ApiError::TooManyStreams(_) => "too_many_stream_clients",
            ApiError::CheckFailed { .. } => "check_failed",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() { ApiError::StoreUnavailable(e) } else { ApiError::Internal(Box::new(e)) }
    }
}

impl From<crate::timeline::TimelineError> for ApiError {
    fn from(e: crate::timeline::TimelineError) -> Self {
        use crate::timeline::TimelineError;
        match e {
            TimelineError::Rollout(e) => e.into(),
            e @ TimelineError::StartTime => ApiError::InvalidBody(e.to_string()),
            TimelineError::CheckFailed { check, detail } => ApiError::CheckFailed { check, detail },
        }
    }
}

impl From<RolloutError> for ApiError {
    fn from(e: RolloutError) -> Self {
        match e {
            RolloutError::NotFound(name) => ApiError::FlagNotFound(name),
            RolloutError::Transition(t) => ApiError::Transition(t),
            RolloutError::VersionConflict { expected, found } => ApiError::VersionConflict { expected, found },
            RolloutError::StageChanged => ApiError::Contended,
            RolloutError::Contended => ApiError::Contended,
            RolloutError::Definition(d) => ApiError::InvalidDefinition(d),
            RolloutError::Store(s) => s.into(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: &'static str,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(_) => tracing::error!(error = ?self, "request failed"),
            ApiError::StoreUnavailable(e) => tracing::warn!(error = %e, "store unavailable"),
            _ => {}
        }
        (status, Json(ErrorBody { error: self.code(), message: self.to_string() })).into_response()
    }
}

/// Errors of read-only routes, as the OpenAPI document lists them.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum ReadErrors {
    #[response(status = 400, description = "invalid flag name, user id or query")]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "missing or unknown token")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "a token of another scope")]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "unknown flag")]
    NotFound(ErrorBody),
    #[response(status = 408, description = "the request took too long")]
    Timeout(ErrorBody),
    #[response(status = 503, description = "the store is unreachable")]
    Unavailable(ErrorBody),
}

/// Errors of routes that take a body or change state, as the OpenAPI document lists them.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum WriteErrors {
    #[response(status = 400, description = "invalid flag name, or a body that is not JSON")]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "missing or unknown token")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "a token of another scope")]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "unknown flag")]
    NotFound(ErrorBody),
    #[response(status = 408, description = "the request took too long")]
    Timeout(ErrorBody),
    #[response(status = 409, description = "illegal transition, stale expected_version, or a lost race")]
    Conflict(ErrorBody),
    #[response(status = 413, description = "body over 64 KiB")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "a body that is not JSON by its content type")]
    UnsupportedMediaType(ErrorBody),
    #[response(status = 422, description = "JSON of the wrong shape, or a definition that fails validation")]
    Unprocessable(ErrorBody),
    #[response(status = 503, description = "the store is unreachable: changes are refused")]
    Unavailable(ErrorBody),
}
