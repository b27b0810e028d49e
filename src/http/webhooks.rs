//! `POST /webhooks/customerio`: signed delivery events feed the bounce, complaint and delivery guards.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;

use super::error::{ApiError, ErrorBody};
use super::extract::{body_rejection, check_json_content_type, parse_json};
use super::{AppState, json_response};
use crate::app::App;
use crate::app::signals::{CUSTOMERIO, EventOutcome};
use crate::sources::customerio::Event;

pub fn routes() -> Router<AppState> {
    Router::new().route("/webhooks/customerio", post(customerio))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Reply<'a> {
    /// `counted`, `duplicate` or `ignored`.
    status: &'static str,
    flag: Option<&'a str>,
    metric: Option<&'a str>,
    /// What counting it caused at once (`rollback`, `pause`).
    action: Option<&'static str>,
    detail: Option<&'static str>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[utoipa::path(
    post, path = "/webhooks/customerio", tag = "sources",
    request_body(content = Event, description = "one reporting-webhook event, signed"),
    params(
        ("X-CIO-Timestamp" = Option<String>, Header, description = "Unix seconds"),
        ("X-CIO-Signature" = Option<String>, Header, description = "hex HMAC-SHA256"),
    ),
    security(("cio_signature" = [])),
    responses(
        (status = 200, description = "counted, duplicate or ignored", body = Reply),
        (status = 400, description = "signed but not JSON", body = ErrorBody),
        (status = 401, description = "missing, forged or stale signature", body = ErrorBody),
        (status = 404, description = "no signing key configured", body = ErrorBody),
        (status = 408, description = "the request took too long", body = ErrorBody),
        (status = 413, description = "body over 64 KiB", body = ErrorBody),
        (status = 415, description = "a body that is not JSON by its content type", body = ErrorBody),
        (status = 422, description = "JSON of the wrong shape, or an event_id over 200 bytes", body = ErrorBody),
        (status = 503, description = "the store is unreachable", body = ErrorBody),
    )
)]
pub async fn customerio(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    if !app.customerio_configured() {
        return Err(ApiError::RouteNotFound("/webhooks/customerio (no signing key configured)".into()));
    }
    let refused = |e: &ApiError| app.signal_refused(CUSTOMERIO, e.code());
    let body = body.map_err(|r| {
        app.signal_refused(CUSTOMERIO, "body");
        body_rejection(r)
    })?;
    // Verified over the raw bytes, before anything is parsed.
    let (signature, timestamp) = (header(&headers, "x-cio-signature"), header(&headers, "x-cio-timestamp"));
    if let Err(rejection) = app.verify_customerio(signature, timestamp, &body) {
        let body = ErrorBody { error: rejection.code(), message: rejection.to_string() };
        return Ok((StatusCode::UNAUTHORIZED, json_response(&body)).into_response());
    }
    check_json_content_type(&headers).inspect_err(refused)?;
    let event: Event = parse_json(&body).inspect_err(refused)?;
    let key = event.dedup_key().map_err(ApiError::InvalidBody).inspect_err(refused)?;
    let reply = |status, flag, action, detail| {
        json_response(&Reply { status, flag, metric: event.metric.as_deref(), action, detail })
    };
    Ok(match app.customerio_event(&event, key.as_deref()).await? {
        EventOutcome::Ignored(why) => reply("ignored", None, None, Some(why)),
        EventOutcome::Duplicate { flag } => reply("duplicate", Some(flag), None, None),
        EventOutcome::Counted { flag, outcome } => {
            reply("counted", Some(flag), outcome.map(|o| o.command.as_str()), None)
        }
    })
}
