//! The hot path: `GET /flag/{user}` and `GET /flags/{flag}/users/{user}`, answered from the snapshot.
//!
//! Per request: one map lookup, one MD5, and one buffer for the body (its per-flag parts were
//! rendered when the flag entered the snapshot); see [`App::answer_json`]. Nothing waits on the
//! store.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::auth::Reader;
use super::error::{ApiError, ErrorBody, ReadErrors};
use super::extract::{EvalPath, FlagParam};
use crate::app::App;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/flag/{user}", get(default_flag))
        .route("/flag/", get(empty_user))
        .route("/flags/{flag}/users/{user}", get(flag_for_user))
        .route("/flags/{flag}/users/", get(empty_user_of_flag))
}

/// The answer's shape (rendered by hand on the hot path; this type documents it and is the
/// reference the rendering is tested against).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct EvaluationBody<'a> {
    pub flag: &'a str,
    pub user: &'a str,
    pub enabled: bool,
    pub bucket: u8,
    pub percent: u8,
    pub stage: &'a str,
    pub status: &'static str,
    pub version: u64,
    /// `internal_user`, `in_rollout`, `not_in_rollout` or `flag_off`.
    pub reason: &'static str,
}

/// An empty user id is a client mistake, not an unknown route.
#[utoipa::path(
    get, path = "/flag/", tag = "evaluate",
    responses((status = 400, description = "the user id is empty", body = ErrorBody))
)]
pub async fn empty_user() -> ApiError {
    ApiError::InvalidUser
}

/// An empty user id is a client mistake, not an unknown route.
#[utoipa::path(
    get, path = "/flags/{flag}/users/", tag = "evaluate",
    params(("flag" = String, Path, description = "flag name")),
    responses((status = 400, description = "the user id is empty", body = ErrorBody))
)]
pub async fn empty_user_of_flag() -> ApiError {
    ApiError::InvalidUser
}

#[utoipa::path(
    get, path = "/flag/{user}", tag = "evaluate",
    params(("user" = String, Path, description = "user id: 1–512 bytes of UTF-8")),
    security((), ("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "the default flag for this user", body = EvaluationBody), ReadErrors)
)]
pub async fn default_flag(reader: Reader, state: State<Arc<App>>, path: EvalPath) -> Result<Response, ApiError> {
    evaluate(reader, state, path).await
}

#[utoipa::path(
    get, path = "/flags/{flag}/users/{user}", tag = "evaluate",
    params(FlagParam, ("user" = String, Path, description = "user id: 1–512 bytes of UTF-8")),
    security((), ("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "the flag for this user", body = EvaluationBody), ReadErrors)
)]
pub async fn flag_for_user(reader: Reader, state: State<Arc<App>>, path: EvalPath) -> Result<Response, ApiError> {
    evaluate(reader, state, path).await
}

/// Both routes: the flag from the path, or the default flag on `/flag/{user}`.
async fn evaluate(_: Reader, State(app): State<Arc<App>>, path: EvalPath) -> Result<Response, ApiError> {
    let body = app.answer_json(path.flag(), path.user())?;
    Ok(([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::EvaluationBody;
    use crate::domain::plan::{FlagDefinition, Stage};
    use crate::domain::rollout::{Flag, Status};
    use crate::snapshot::FlagView;

    #[test]
    fn the_rendered_answer_is_byte_for_byte_what_serde_json_writes() {
        let users = [
            "user-1",
            "ann@example.com",
            "prod-audit-test",
            "",
            "quote\"back\\slash",
            "tab\tnew\nline",
            "\u{1}ctl",
            "émoji 🚀",
            "</script>",
            "smoke-test-1700000000",
        ];
        for (status, stage_index, internal) in [
            (Status::Pending, 0, vec![]),
            (Status::Running, 1, vec!["ann@example.com".to_owned()]),
            (Status::Paused, 2, vec![]),
            (Status::RolledBack, 1, vec![]),
            (Status::Completed, 2, vec!["user-1".into()]),
        ] {
            let definition = FlagDefinition {
                stages: vec![
                    Stage::new("in\"ternal", 0, 1, true),
                    Stage::new("ten", 10, 1, false),
                    Stage::new("all", 100, 1, false),
                ],
                internal_users: internal,
                salt: Some("s".into()),
                ..FlagDefinition::default()
            };
            let mut flag = Flag::new("check.out-1_x".into(), definition, 1);
            flag.state.status = status;
            flag.state.stage_index = stage_index;
            flag.state.version = 12_345;
            let view = FlagView::new(flag);
            for user in users {
                let a = view.evaluate(user);
                let expected = serde_json::to_vec(&EvaluationBody {
                    flag: &view.flag.name,
                    user,
                    enabled: a.evaluation.enabled,
                    bucket: a.bucket,
                    percent: view.percent,
                    stage: view.flag.stage_name(),
                    status: view.flag.state.status.as_str(),
                    version: view.flag.state.version,
                    reason: a.evaluation.reason.as_str(),
                })
                .expect("serializes");
                assert_eq!(String::from_utf8_lossy(&view.answer_json(user, &a)), String::from_utf8_lossy(&expected));
            }
        }
    }
}
