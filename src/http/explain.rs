//! `GET /flags/{flag}/explain?user=ID`: why a user gets the answer they get — the exact key hashed,
//! its bucket, the percentage and the allow-list — answered from the snapshot like an evaluation.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::auth::Explainer;
use super::error::{ApiError, ReadErrors};
use super::extract::{ApiQuery, FlagParam};
use super::{AppState, json_response};
use crate::app::App;
use crate::app::evaluate::Explanation;
use crate::domain::plan::valid_user;

pub fn routes() -> Router<AppState> {
    Router::new().route("/flags/{flag}/explain", get(explain))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    user: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ExplainBody<'a> {
    flag: &'a str,
    user: &'a str,
    salt: Option<&'a str>,
    /// The exact string whose MD5 gives the bucket.
    hashed_key: String,
    bucket: u8,
    percent: u8,
    stage: &'a str,
    status: &'static str,
    /// On the flag's internal allow-list.
    internal_user: bool,
    enabled: bool,
    reason: &'static str,
}

#[utoipa::path(
    get, path = "/flags/{flag}/explain", tag = "evaluate",
    params(FlagParam, ("user" = String, Query, description = "the user id to explain")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "why this user gets this answer", body = ExplainBody), ReadErrors)
)]
pub async fn explain(
    _: Explainer,
    State(app): State<Arc<App>>,
    FlagParam(flag): FlagParam,
    ApiQuery(query): ApiQuery<ExplainQuery>,
) -> Result<Response, ApiError> {
    if !valid_user(&query.user) {
        return Err(ApiError::InvalidUser);
    }
    let Explanation { view, answer, hashed_key } = app.explain(&flag, &query.user)?;
    Ok(json_response(&ExplainBody {
        flag: &view.flag.name,
        user: &query.user,
        salt: view.flag.definition.salt.as_deref(),
        hashed_key,
        bucket: answer.bucket,
        percent: view.percent,
        stage: view.flag.stage_name(),
        status: view.flag.state.status.as_str(),
        internal_user: answer.is_internal,
        enabled: answer.evaluation.enabled,
        reason: answer.evaluation.reason.as_str(),
    }))
}
