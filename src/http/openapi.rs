//! The OpenAPI 3.1 document of every route, generated from the handlers' annotations, served at
//! `GET /openapi.json`. This module imports the handlers; none imports it (the response sets they
//! share live in [`super::error`], the flag-name parameter in [`super::extract::FlagParam`]).

use std::sync::LazyLock;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::AppState;
use super::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(document))
}

/// The document, serialized once: it never changes while the process runs, and building it takes
/// far longer than sending it (a client pipelining requests for it would make us spin).
static DOCUMENT: LazyLock<Result<Bytes, String>> =
    LazyLock::new(|| serde_json::to_vec(&ApiDoc::openapi()).map(Bytes::from).map_err(|e| e.to_string()));

/// The document (no auth: it holds no secrets).
#[utoipa::path(
    get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "this document", content_type = "application/json", body = Object))
)]
pub async fn document() -> Response {
    match &*DOCUMENT {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes.clone()).into_response(),
        Err(e) => ApiError::Internal(e.clone().into()).into_response(),
    }
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("admin, read, metrics or alerts token, by route"))
                    .build(),
            ),
        );
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
        components.add_security_scheme(
            "cio_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CIO-Signature",
                "hex HMAC-SHA256 of `v0:{X-CIO-Timestamp}:{body}` with a Customer.io signing key",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "rollout-controller", description = "Staged feature rollouts with guard rails."),
    paths(
        document,
        super::evaluate::default_flag,
        super::evaluate::flag_for_user,
        super::evaluate::empty_user,
        super::evaluate::empty_user_of_flag,
        super::clients::config,
        super::clients::stream,
        super::clients::evaluate_batch,
        super::admin::list,
        super::admin::show,
        super::admin::put,
        super::admin::delete,
        super::timeline::start,
        super::admin::cancel,
        super::timeline::approve,
        super::timeline::checks,
        super::timeline::rollback_all,
        super::timeline::frozen,
        super::timeline::freeze,
        super::timeline::unfreeze,
        super::admin::advance,
        super::admin::pause,
        super::admin::resume,
        super::admin::rollback,
        super::admin::history,
        super::admin::deletions,
        super::signals::push,
        super::signals::health,
        super::signals::health_history,
        super::explain::explain,
        super::report::report,
        super::alerts::alertmanager,
        super::webhooks::customerio,
        super::ofrep::evaluate_one,
        super::ofrep::evaluate_all,
        super::debug::signals,
        super::status::status,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        super::ui::index,
        super::ui::index_slash,
        super::ui::app_js,
        super::ui::app_css,
        super::ui::favicon,
    ),
    modifiers(&Security),
    tags(
        (name = "evaluate", description = "per-user answers, from the in-process snapshot"),
        (name = "clients", description = "configuration, change stream and batch evaluations for SDKs"),
        (name = "flags", description = "define flags and drive their rollouts"),
        (name = "timeline", description = "scheduled starts, checks, approvals, the emergency stop and the freeze"),
        (name = "guards", description = "guard signals and verdicts"),
        (name = "sources", description = "Alertmanager and Customer.io webhooks"),
        (name = "openfeature", description = "OpenFeature remote evaluation (OFREP)"),
        (name = "ops", description = "health, readiness, metrics, diagnostics, the dashboard"),
    )
)]
pub struct ApiDoc;
