//! `GET /flags/{flag}/report`: the post-launch review of a rollout ([`crate::review`]), as JSON or
//! (`?format=md`) Markdown.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::auth::Admin;
use super::error::{ApiError, ReadErrors};
use super::extract::{ApiQuery, FlagParam};
use super::{AppState, json_response};
use crate::app::App;
use crate::review::{ReportBody, markdown};

pub fn routes() -> Router<AppState> {
    Router::new().route("/flags/{flag}/report", get(report))
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Json,
    Md,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    #[serde(default)]
    format: Format,
}

#[utoipa::path(
    get, path = "/flags/{flag}/report", tag = "flags",
    params(FlagParam, ("format" = Option<String>, Query, description = "`json` (default) or `md`")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (
            status = 200, description = "the post-launch review",
            content((ReportBody = "application/json"), (String = "text/markdown"))
        ),
        ReadErrors,
    )
)]
pub async fn report(
    _: Admin,
    State(app): State<Arc<App>>,
    FlagParam(name): FlagParam,
    ApiQuery(query): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let review = app.review(&name).await?;
    let body = ReportBody::new(&review);
    Ok(match query.format {
        Format::Json => json_response(&body),
        Format::Md => ([(CONTENT_TYPE, "text/markdown; charset=utf-8")], markdown(&body)).into_response(),
    })
}
