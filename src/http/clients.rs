//! What clients that evaluate locally call: `GET /flags/config` (every flag's configuration, with
//! an ETag), `GET /stream` (Server-Sent Events of its changes) and `POST /flags/{flag}/evaluate`
//! (one flag for a whole audience). All answered from the snapshot.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::auth::Reader;
use super::error::{ApiError, ErrorBody, ReadErrors};
use super::extract::{FlagParam, check_json_content_type, parse_json};
use super::{AppState, json_response};
use crate::app::App;
use crate::app::clients::StreamItem;
use crate::domain::plan::valid_user;
use crate::snapshot::FlagConfig;

/// Ids one batch evaluates at most.
pub const MAX_BATCH_USERS: usize = 100_000;

/// The body limit of a batch: 100,000 ids of 512 bytes, quoted, with room for escapes.
pub const BATCH_BODY_LIMIT: usize = 64 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/flags/config", get(config))
        .route("/stream", get(stream))
        .route("/flags/{flag}/evaluate", post(evaluate_batch).layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)))
}

/// `GET /flags/config`'s body (rendered from the snapshot's views; this type documents it).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ConfigBody {
    /// Every flag, by name.
    #[schema(inline = false)]
    flags: Vec<FlagConfig<'static>>,
}

/// Whether `If-None-Match` names `etag`.
fn matches(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/").as_bytes() == etag.as_bytes()))
}

#[utoipa::path(
    get, path = "/flags/config", tag = "clients",
    params(("If-None-Match" = Option<String>, Header, description = "the ETag of a previous answer")),
    security((), ("bearer" = []), ("api_key" = [])),
    responses(
        (
            status = 200, description = "every flag's evaluation configuration", body = ConfigBody,
            headers(("ETag" = String, description = "changes when any flag changes; equal on every replica"))
        ),
        (status = 304, description = "unchanged since the ETag sent", headers(("ETag" = String))),
        ReadErrors,
    )
)]
pub async fn config(_: Reader, State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let config = app.client_config();
    let etag = HeaderValue::from_str(&config.etag).map_err(|e| ApiError::Internal(Box::new(e)))?;
    if matches(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag)]).into_response());
    }
    Ok(([(ETAG, etag), (CONTENT_TYPE, HeaderValue::from_static("application/json"))], config.body).into_response())
}

/// The errors `GET /stream` may answer.
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
enum StreamErrors {
    #[response(status = 401, description = "missing or unknown token")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "a token of another scope")]
    Forbidden(ErrorBody),
    #[response(status = 503, description = "too_many_stream_clients: this replica has all the streams it takes")]
    Unavailable(ErrorBody),
}

/// The Server-Sent Events of `item`: pieces the shared JSON is sent between, never copied.
fn frames(item: StreamItem) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    let pieces = match item {
        StreamItem::Snapshot { seq, body } => vec![Bytes::from(format!("event: snapshot\nid: {seq}\ndata: ")), body],
        StreamItem::Change(event) => vec![Bytes::from(format!("event: change\nid: {}\ndata: ", event.seq)), event.json],
        StreamItem::Heartbeat => vec![Bytes::from_static(b": heartbeat")],
    };
    futures::stream::iter(pieces.into_iter().chain([Bytes::from_static(b"\n\n")]).map(Ok))
}

/// One Server-Sent Event of `GET /stream`, as the OpenAPI document describes it.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
struct StreamEvent {
    /// `snapshot` or `change`.
    event: String,
    /// This replica's sequence number of the event.
    id: String,
    /// JSON: the body of `GET /flags/config` (snapshot), one flag's configuration or
    /// `{"name", "deleted": true}` (change).
    data: String,
}

#[utoipa::path(
    get, path = "/stream", tag = "clients",
    params(("Last-Event-ID" = Option<String>, Header, description = "the id of the last event received")),
    security((), ("bearer" = []), ("api_key" = [])),
    responses(
        (
            status = 200, content_type = "text/event-stream", body = StreamEvent,
            description = "`event: snapshot` (the body of GET /flags/config) unless the events after \
                Last-Event-ID are still held, then `event: change` (a FlagConfig, or `{\"name\", \"deleted\": true}`) \
                per change; `id:` numbers events on this replica; `: heartbeat` comments in between"
        ),
        StreamErrors,
    )
)]
pub async fn stream(_: Reader, State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    // An id this replica cannot read is one it never gave: start from a snapshot.
    let after = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let changes = app.stream(after)?;
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        // Proxies that buffer answers (nginx) pass each event on at once.
        (axum::http::HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")),
    ];
    Ok((headers, Body::from_stream(changes.flat_map(frames))).into_response())
}

/// `POST /flags/{flag}/evaluate`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct BatchRequest {
    /// 1–100,000 user ids, each 1–512 bytes of UTF-8.
    #[schema(value_type = Vec<String>)]
    users: Users,
}

/// The ids of a batch, read up to [`MAX_BATCH_USERS`]; past it the rest is only counted, never
/// kept (a body of millions of one-letter ids takes no memory).
struct Users {
    ids: Vec<String>,
    total: usize,
}

impl<'de> Deserialize<'de> for Users {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(UsersVisitor)
    }
}

struct UsersVisitor;

impl<'de> Visitor<'de> for UsersVisitor {
    type Value = Users;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of user ids")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Users, A::Error> {
        let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_BATCH_USERS));
        while ids.len() < MAX_BATCH_USERS {
            match seq.next_element::<String>()? {
                Some(id) => ids.push(id),
                None => return Ok(Users { total: ids.len(), ids }),
            }
        }
        let mut total = ids.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            total += 1;
        }
        Ok(Users { ids, total })
    }
}

/// The answer of a batch.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BatchBody<'a> {
    pub flag: &'a str,
    pub version: u64,
    pub percent: u8,
    pub stage: &'a str,
    /// One per user, in the order sent.
    pub enabled: Vec<bool>,
}

/// The errors a batch may answer.
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
enum BatchErrors {
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
    #[response(status = 413, description = "payload_too_large: over 100,000 ids, or a body over 64 MiB")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "a body that is not JSON by its content type")]
    UnsupportedMediaType(ErrorBody),
    #[response(status = 422, description = "invalid_body: no ids, or an id that is not 1–512 bytes (named by index)")]
    Unprocessable(ErrorBody),
}

/// The ids of a batch body, or why they are refused.
fn batch_users(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Vec<String>, ApiError> {
    check_json_content_type(headers)?;
    let body = body.map_err(|r| match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(BATCH_BODY_LIMIT),
        _ => ApiError::MalformedJson(r.body_text()),
    })?;
    let BatchRequest { users } = parse_json(&body)?;
    if users.total > MAX_BATCH_USERS {
        return Err(ApiError::TooManyUsers { max: MAX_BATCH_USERS, sent: users.total });
    }
    if users.ids.is_empty() {
        return Err(ApiError::InvalidBody("users: give at least one user id".into()));
    }
    if let Some(i) = users.ids.iter().position(|u| !valid_user(u)) {
        return Err(ApiError::InvalidBody(format!("users[{i}]: user ids are 1–512 bytes of UTF-8")));
    }
    Ok(users.ids)
}

#[utoipa::path(
    post, path = "/flags/{flag}/evaluate", tag = "clients",
    params(FlagParam),
    request_body(content = BatchRequest),
    security((), ("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the flag for each user, from one version of it", body = BatchBody),
        BatchErrors,
    )
)]
pub async fn evaluate_batch(
    _: Reader,
    State(app): State<Arc<App>>,
    FlagParam(flag): FlagParam,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let users = batch_users(&headers, body)?;
    let answer = app.evaluate_batch(&flag, &users)?;
    let view = &answer.view;
    Ok(json_response(&BatchBody {
        flag: &view.flag.name,
        version: view.flag.state.version,
        percent: view.percent,
        stage: view.flag.stage_name(),
        enabled: answer.enabled,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_past_the_limit_are_counted_not_kept() {
        let body = format!("{{\"users\": [{}\"last\"]}}", "\"a\",".repeat(MAX_BATCH_USERS + 5));
        let BatchRequest { users } = parse_json(body.as_bytes()).expect("parses");
        assert_eq!((users.ids.len(), users.total), (MAX_BATCH_USERS, MAX_BATCH_USERS + 6));
    }
}
