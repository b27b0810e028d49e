//! The operator dashboard at `/ui/`: one static page, its script and stylesheet, embedded in the
//! binary. The page only calls the JSON API with the operator's admin token; it has no routes of
//! its own beyond the assets, so it needs no auth here. Every URL in it is relative (`app.js`,
//! `../flags`), so it works under any path prefix (see `--base-path`).

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

const INDEX_HTML: &str = include_str!("../../assets/ui/index.html");
const APP_JS: &str = include_str!("../../assets/ui/app.js");
const APP_CSS: &str = include_str!("../../assets/ui/app.css");
const FAVICON_PNG: &[u8] = include_bytes!("../../assets/ui/favicon.png");

/// Everything from this origin, nothing inline, never framed; the token form posts nowhere (the
/// script handles it), so a broken script cannot leak the token into a URL.
const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index_slash))
        .route("/ui/app.js", get(app_js))
        .route("/ui/app.css", get(app_css))
        .route("/ui/favicon.png", get(favicon))
}

#[utoipa::path(
    get, path = "/ui/", tag = "ops",
    responses((status = 200, description = "the dashboard", content_type = "text/html", body = String))
)]
pub async fn index_slash() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML.as_bytes())
}

#[utoipa::path(
    get, path = "/ui/app.js", tag = "ops",
    responses((status = 200, description = "the dashboard script", content_type = "text/javascript", body = String))
)]
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS.as_bytes())
}

#[utoipa::path(
    get, path = "/ui/app.css", tag = "ops",
    responses((status = 200, description = "the dashboard styles", content_type = "text/css", body = String))
)]
pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS.as_bytes())
}

#[utoipa::path(
    get, path = "/ui/favicon.png", tag = "ops",
    responses((status = 200, description = "the dashboard icon", content_type = "image/png", body = Vec<u8>))
)]
pub async fn favicon() -> Response {
    asset("image/png", FAVICON_PNG)
}

/// `/ui` sends the browser to `ui/`, relative, so that the page's relative URLs resolve under
/// `…/ui/` whatever prefix an ingress added or stripped on the way.
#[utoipa::path(
    get, path = "/ui", tag = "ops",
    responses((status = 308, description = "to the dashboard at `ui/`", headers(("Location" = String))))
)]
pub async fn index() -> Response {
    (StatusCode::PERMANENT_REDIRECT, [(LOCATION, "ui/"), (CACHE_CONTROL, "no-cache")]).into_response()
}

/// An embedded asset with the headers every dashboard response carries. `no-cache` makes the
/// browser revalidate, so a new binary's page is picked up at once.
fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, CSP),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}
