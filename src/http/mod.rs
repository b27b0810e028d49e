//! The HTTP edge: routes, shared state, and the layers every request passes through.
//!
//! Each handler parses and authorizes its request ([`extract`], [`auth`]), calls one method of the
//! application layer ([`crate::app::App`]) and renders the result; [`error`] turns every failure
//! into the one JSON error shape. [`openapi`] documents the handlers and imports them; no handler
//! imports it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, Uri, header};
use axum::response::IntoResponse;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::app::App;

pub mod admin;
pub mod alerts;
pub mod auth;
pub mod clients;
pub mod debug;
pub mod error;
pub mod evaluate;
pub mod explain;
pub mod extract;
pub mod ofrep;
pub mod openapi;
pub mod ops;
pub mod report;
pub mod signals;
pub mod status;
pub mod strict;
pub mod timeline;
pub mod ui;
pub mod webhooks;

use self::error::ApiError;

/// Everything handlers share; cheap to clone (three reference counts).
#[derive(Clone)]
pub struct AppState {
    app: Arc<App>,
    auth: Arc<auth::Auth>,
    /// Set on shutdown: `/readyz` answers 503 while the other routes still serve.
    drain: Arc<ops::Drain>,
}

impl AppState {
    /// The edge over the application layer `app`, taking the tokens of `auth`.
    pub fn new(app: Arc<App>, auth: auth::Auth) -> Self {
        Self { app, auth: Arc::new(auth), drain: Arc::new(ops::Drain::default()) }
    }

    /// The drain flag, for the accept loop and the shutdown that sets it.
    pub fn drain(&self) -> &Arc<ops::Drain> {
        &self.drain
    }
}

/// Handlers that need nothing but the application layer take only it: one reference count per
/// request (the hot path among them) instead of a clone of every field of [`AppState`].
impl axum::extract::FromRef<AppState> for Arc<App> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.app)
    }
}

/// Serializes a body straight into a response (no intermediate `Value`).
pub fn json_response<T: serde::Serialize>(body: &T) -> axum::response::Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response(),
        Err(e) => ApiError::Internal(Box::new(e)).into_response(),
    }
}

/// The routes browser pages may call (evaluations, the client configuration and stream, OFREP),
/// with CORS for `origins` when there are any; none adds no layer, so the hot path stays as it is.
fn browser_routes(origins: &[String]) -> Router<AppState> {
    // The JSON 405 is set before the layer, so that CORS answers preflights (OPTIONS) too.
    let routes = Router::new()
        .merge(evaluate::routes())
        .merge(clients::routes())
        .merge(ofrep::routes())
        .method_not_allowed_fallback(method_not_allowed);
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    if origins.is_empty() {
        return routes;
    }
    routes.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_NONE_MATCH,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::ETAG])
            .max_age(Duration::from_secs(600)),
    )
}

async fn method_not_allowed() -> axum::response::Response {
    ApiError::MethodNotAllowed.into_response()
}

/// The HTTP edge; `cors_origins` may call the routes browsers need (see [`browser_routes`]).
/// With a `base_path` (`/rollout`) every route is served under it too: behind an ingress that
/// keeps the prefix as well as one that strips it, while probes and in-cluster clients keep the
/// root. The dashboard uses relative URLs only, so it works under either.
///
/// The body limit, the request timeout and the drain are applied around it by the server's
/// accept loop (`server::accept::Edge`), once per request, not as layers of every route.
/// The request trace (a `debug` span per request, with the matched route) is a layer only when
/// `debug` is enabled for this module when the router is built: at `info`, the default, it would
/// create a disabled span, read the clock twice and wrap every answer's body for nothing.
pub fn router(state: AppState, cors_origins: &[String], base_path: &str) -> Router {
    let routes = Router::new()
        .merge(browser_routes(cors_origins))
        .merge(admin::routes())
        .merge(timeline::routes())
        .merge(ops::routes())
        .merge(signals::routes())
        .merge(alerts::routes())
        .merge(webhooks::routes())
        .merge(debug::routes())
        .merge(openapi::routes())
        .merge(explain::routes())
        .merge(report::routes())
        .merge(status::routes())
        .merge(ui::routes());
    let routes =
        if base_path.is_empty() { routes } else { Router::new().nest(base_path, routes.clone()).merge(routes) };
    let router = routes
        .fallback(|uri: Uri| async move { ApiError::RouteNotFound(uri.path().chars().take(200).collect()) })
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return router;
    }
    router.layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
        let path = req.extensions().get::<axum::extract::MatchedPath>().map_or("", axum::extract::MatchedPath::as_str);
        tracing::debug_span!("request", method = %req.method(), path)
    }))
}
