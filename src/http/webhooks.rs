//! `POST /webhooks/customerio`: signed delivery events feed the bounce, complaint and delivery guards.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;

use super::error::{ApiError, ErrorBody};
use super::extract::{body_rejection, check_json_content_type, parse_json};
use super::signals::{Ingested, ingest, ingest_once};
use super::{AppState, json_response};
use crate::sources::customerio::{Event, verify};

/// Customer.io retries for days: remember delivered event ids this long.
const EVENT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const SOURCE: &str = "customerio";

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

#[utoipa::path(post, path = "/webhooks/customerio", tag = "sources", request_body(content = Event, description = "one reporting-webhook event, signed"), params(("X-CIO-Timestamp" = Option<String>, Header, description = "Unix seconds"), ("X-CIO-Signature" = Option<String>, Header, description = "hex HMAC-SHA256")), security(("cio_signature" = [])), responses((status = 200, description = "counted, duplicate or ignored", body = Reply), (status = 400, description = "signed but not JSON", body = ErrorBody), (status = 401, description = "missing, forged or stale signature", body = ErrorBody), (status = 404, description = "no signing key configured", body = ErrorBody), (status = 408, description = "the request took too long", body = ErrorBody), (status = 413, description = "body over 64 KiB", body = ErrorBody), (status = 415, description = "a body that is not JSON by its content type", body = ErrorBody), (status = 422, description = "JSON of the wrong shape, or an event_id over 200 bytes", body = ErrorBody), (status = 503, description = "the store is unreachable", body = ErrorBody)))]
pub async fn customerio(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let sources = &state.sources;
    if sources.cio_signing_keys.is_empty() {
        return Err(ApiError::RouteNotFound("/webhooks/customerio (no signing key configured)".into()));
    }
    let stats = &state.signals;
    let now = state.rollouts.clock.now_ms();
    stats.received(SOURCE, now);
    let body = body.map_err(|r| {
        stats.rejected(SOURCE, "body");
        body_rejection(r)
    })?;
    // Verified over the raw bytes, before anything is parsed.
    if let Err(rejection) = verify(
        &sources.cio_signing_keys,
        header(&headers, "x-cio-signature"),
        header(&headers, "x-cio-timestamp"),
        &body,
        now,
    ) {
        stats.rejected(SOURCE, rejection.code());
        let body = ErrorBody { error: rejection.code(), message: rejection.to_string() };
        return Ok((StatusCode::UNAUTHORIZED, json_response(&body)).into_response());
    }
    check_json_content_type(&headers).inspect_err(|e| stats.rejected(SOURCE, e.code()))?;
    let event: Event = parse_json(&body).inspect_err(|e| stats.rejected(SOURCE, e.code()))?;
    let key = event.dedup_key().map_err(ApiError::InvalidBody).inspect_err(|e| stats.rejected(SOURCE, e.code()))?;
    stats.accepted(SOURCE);
    let reply = |status, flag, action, detail| {
        json_response(&Reply { status, flag, metric: event.metric.as_deref(), action, detail })
    };
    let ignored = |detail: &'static str| {
        stats.count(SOURCE, detail, 1);
        Ok(reply("ignored", None, None, Some(detail)))
    };
    let Some(sample) = event.sample() else { return ignored("not_an_email_guard_event") };
    let Some(flag) = sources.cio_mapping.flag_for(&event) else { return ignored("no_flag_mapped") };
    let Some(view) = state.rollouts.snapshot.get(flag) else { return ignored("unknown_flag") };
    let ingested = match &key {
        Some(key) => ingest_once(&state, &view.flag, &sample, key, EVENT_TTL).await?,
        None => Ingested::Counted(ingest(&state, &view.flag, &sample).await?),
    };
    match ingested {
        Ingested::Duplicate => {
            stats.count(SOURCE, "duplicate", 1);
            Ok(reply("duplicate", Some(flag), None, None))
        }
        Ingested::Counted(outcome) => {
            stats.count(SOURCE, event.metric.as_deref().unwrap_or("unknown"), 1);
            Ok(reply("counted", Some(flag), outcome.map(|o| o.command.as_str()), None))
        }
    }
}
