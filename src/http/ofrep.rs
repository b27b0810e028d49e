//! OpenFeature Remote Evaluation Protocol (OFREP): any OpenFeature SDK's OFREP provider can
//! evaluate flags here unchanged. Answers come from the snapshot, like `/flags/{flag}/users/{user}`.
//!
//! Errors use OFREP's shape (`{"key","errorCode","errorDetails"}`), not the API's, because that is
//! what the SDKs read.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;

use super::auth::Reader;
use super::error::{ApiError, ErrorBody};
use super::extract::{body_rejection, check_json_content_type};
use super::{AppState, json_response};
use crate::app::App;
use crate::domain::plan::{MAX_USER_LEN, valid_flag_name};
use crate::domain::rollout::Reason;
use crate::snapshot::{self, Answer, FlagView};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(evaluate_one))
        .route("/ofrep/v1/evaluate/flags", post(evaluate_all))
}

/// The request body of both OFREP routes.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OfrepRequest {
    /// The evaluation context; `targetingKey` is the user id.
    context: OfrepContext,
}

#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OfrepContext {
    #[schema(rename = "targetingKey")]
    targeting_key: String,
}

/// A successful evaluation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Success<'a> {
    pub key: &'a str,
    pub value: bool,
    pub reason: &'static str,
    pub variant: &'static str,
    pub metadata: Metadata<'a>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Metadata<'a> {
    pub percent: u8,
    pub bucket: u8,
    pub stage: &'a str,
    pub version: u64,
}

/// An evaluation that failed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Failure {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(rename = "errorCode")]
    pub error_code: &'static str,
    #[serde(rename = "errorDetails")]
    pub error_details: String,
}

fn failure(status: StatusCode, key: Option<&str>, code: &'static str, details: impl Into<String>) -> Response {
    let body =
        Failure { key: key.map(|k| k.chars().take(128).collect()), error_code: code, error_details: details.into() };
    (status, json_response(&body)).into_response()
}

/// The body, or why it is refused: too large (413), cut off (400) or not JSON (415).
fn ofrep_body(
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Bytes, ApiError> {
    check_json_content_type(headers)?;
    body.map_err(body_rejection)
}

/// OFREP's answer to a refused body.
fn refused(key: Option<&str>, e: &ApiError) -> Response {
    failure(e.status(), key, "PARSE_ERROR", e.to_string())
}

/// A 400 in OFREP's terms: its error code and details.
struct BadRequest(&'static str, String);

/// The targeting key from `{"context": {"targetingKey": "..."}}`, or the OFREP error.
fn targeting_key(body: &[u8]) -> Result<String, BadRequest> {
    let bad = |code, details: &str| BadRequest(code, details.to_owned());
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad("PARSE_ERROR", &format!("the body is not JSON: {e}")))?;
    let Some(object) = value.as_object() else { return Err(bad("PARSE_ERROR", "the body must be a JSON object")) };
    let context = match object.get("context") {
        None | Some(serde_json::Value::Null) => {
            return Err(bad("TARGETING_KEY_MISSING", "no context.targetingKey given"));
        }
        Some(serde_json::Value::Object(c)) => c,
        Some(_) => return Err(bad("INVALID_CONTEXT", "context must be a JSON object")),
    };
    match context.get("targetingKey") {
        None | Some(serde_json::Value::Null) => Err(bad("TARGETING_KEY_MISSING", "no context.targetingKey given")),
        Some(serde_json::Value::String(s)) if s.is_empty() => {
            Err(bad("TARGETING_KEY_MISSING", "context.targetingKey is empty"))
        }
        Some(serde_json::Value::String(s)) if s.len() > MAX_USER_LEN => {
            Err(bad("INVALID_CONTEXT", &format!("context.targetingKey is longer than {MAX_USER_LEN} bytes")))
        }
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(bad("INVALID_CONTEXT", "context.targetingKey must be a string")),
    }
}

/// A flag's answer in OFREP's terms.
fn success<'a>(view: &'a FlagView, answer: &Answer) -> Success<'a> {
    let reason = match answer.evaluation.reason {
        Reason::InternalUser => "TARGETING_MATCH",
        Reason::InRollout | Reason::NotInRollout => "SPLIT",
        Reason::FlagOff => "DISABLED",
    };
    Success {
        key: &view.flag.name,
        value: answer.evaluation.enabled,
        reason,
        variant: if answer.evaluation.enabled { "on" } else { "off" },
        metadata: Metadata {
            percent: view.percent,
            bucket: answer.bucket,
            stage: view.flag.stage_name(),
            version: view.flag.state.version,
        },
    }
}

/// The errors both OFREP routes may answer, in OFREP's shape where its SDKs read them.
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
enum OfrepErrors {
    #[response(status = 400, description = "TARGETING_KEY_MISSING, PARSE_ERROR or INVALID_CONTEXT")]
    BadRequest(Failure),
    #[response(status = 401, description = "missing or unknown token")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "a token of another scope")]
    Forbidden(ErrorBody),
    #[response(status = 408, description = "the request took too long")]
    Timeout(ErrorBody),
    #[response(status = 413, description = "body over 64 KiB")]
    TooLarge(Failure),
    #[response(status = 415, description = "a body that is not JSON by its content type")]
    UnsupportedMediaType(Failure),
}

#[utoipa::path(
    post, path = "/ofrep/v1/evaluate/flags/{key}", tag = "openfeature",
    params(("key" = String, Path, description = "flag key")),
    request_body(content = OfrepRequest),
    security((), ("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the evaluation", body = Success),
        (status = 404, description = "FLAG_NOT_FOUND", body = Failure),
        OfrepErrors,
    )
)]
pub async fn evaluate_one(
    _: Reader,
    State(app): State<Arc<App>>,
    key: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Ok(Path(key)) = key else {
        return failure(StatusCode::NOT_FOUND, None, "FLAG_NOT_FOUND", "the flag key is not valid UTF-8");
    };
    let body = match ofrep_body(&headers, body) {
        Ok(body) => body,
        Err(e) => return refused(Some(&key), &e),
    };
    let user = match targeting_key(&body) {
        Ok(user) => user,
        Err(BadRequest(code, details)) => return failure(StatusCode::BAD_REQUEST, Some(&key), code, details),
    };
    let evaluated = valid_flag_name(&key).then(|| app.evaluate(&key, &user)).flatten();
    let Some((view, answer)) = evaluated else {
        return failure(StatusCode::NOT_FOUND, Some(&key), "FLAG_NOT_FOUND", format!("no flag named {key:?}"));
    };
    json_response(&success(&view, &answer))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Bulk<'a> {
    flags: Vec<Success<'a>>,
}

#[utoipa::path(
    post, path = "/ofrep/v1/evaluate/flags", tag = "openfeature",
    params(("If-None-Match" = Option<String>, Header, description = "the ETag of a previous answer")),
    request_body(content = OfrepRequest),
    security((), ("bearer" = []), ("api_key" = [])),
    responses(
        (
            status = 200, description = "every flag for this context", body = Bulk,
            headers(("ETag" = String, description = "changes when any flag changes"))
        ),
        (status = 304, description = "unchanged since the ETag sent", headers(("ETag" = String))),
        OfrepErrors,
        (status = 500, description = "GENERAL: the answer could not be built (logged)", body = Failure),
    )
)]
pub async fn evaluate_all(
    _: Reader,
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match ofrep_body(&headers, body) {
        Ok(body) => body,
        Err(e) => return refused(None, &e),
    };
    let user = match targeting_key(&body) {
        Ok(user) => user,
        Err(BadRequest(code, details)) => return failure(StatusCode::BAD_REQUEST, None, code, details),
    };
    // One read of the snapshot for both the tag and the answer, so that they always agree.
    let views = app.flags();
    let etag = match HeaderValue::from_str(&snapshot::etag(&views, Some(&user))) {
        Ok(etag) => etag,
        Err(e) => return internal_failure(&e),
    };
    let matches = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/").as_bytes() == etag.as_bytes()));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(ETAG, etag)]).into_response();
    }
    let flags: Vec<Success> = views.iter().map(|v| success(v, &v.evaluate(&user))).collect();
    match serde_json::to_vec(&Bulk { flags }) {
        Ok(bytes) => {
            (StatusCode::OK, [(ETAG, etag), (CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes)
                .into_response()
        }
        Err(e) => internal_failure(&e),
    }
}

/// OFREP's answer to a failure of ours, logged: never an empty or partial 200.
fn internal_failure(e: &dyn std::error::Error) -> Response {
    tracing::error!(error = %e, "OFREP bulk evaluation failed");
    failure(StatusCode::INTERNAL_SERVER_ERROR, None, "GENERAL", "internal error")
}
