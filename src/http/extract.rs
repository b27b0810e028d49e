//! Our own extractors, so that every rejection comes out in the API's error format.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, RawPathParams, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use super::error::ApiError;
use super::strict::Strict;
use crate::domain::plan::{valid_flag_name, valid_user};

/// The largest body any route accepts.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON body. An empty body reads as `{}`; a non-JSON content type is 415; syntax errors are
/// 400 `malformed_json`; well-formed JSON of the wrong shape (an array for an object included) is
/// 422 `invalid_body`, naming the field.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        check_json_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        parse_json(if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes }).map(JsonBody)
    }
}

/// A body sent with a content type other than JSON is refused (415); none at all is taken as JSON.
pub fn check_json_content_type(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType(ct.chars().take(100).collect()));
        }
    }
    Ok(())
}

/// A body that could not be read: too large (413) or broken off (400).
pub fn body_rejection(r: axum::extract::rejection::BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(BODY_LIMIT)
    } else {
        ApiError::MalformedJson(r.body_text())
    }
}

/// Parses JSON the way [`JsonBody`] does, in two steps so that no error message is read to tell
/// them apart: bytes that are not JSON by its grammar (not UTF-8, bad syntax, cut short, trailing
/// data) are 400 `malformed_json`; JSON that is not of the expected shape is 422 `invalid_body`,
/// naming the field: a wrong type, an array where an object is expected (at any depth, see
/// [`Strict`]), a number no field holds (`1e400`), nesting deeper than 128.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ApiError::MalformedJson(format!("not UTF-8: {e}")))?;
    check_syntax(text)?;
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(Strict(&mut de)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::InvalidBody(inner.to_string())
        } else {
            ApiError::InvalidBody(format!("{path}: {inner}"))
        }
    })
}

/// Reads the text by JSON's grammar alone: no value is built, so a number of any size passes.
fn check_syntax(text: &str) -> Result<(), ApiError> {
    let mut de = serde_json::Deserializer::from_str(text);
    IgnoredAny::deserialize(&mut de).and_then(|_| de.end()).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

async fn params(parts: &mut Parts) -> Result<HashMap<String, String>, ApiError> {
    Path::<HashMap<String, String>>::from_request_parts(parts, &()).await.map(|Path(p)| p).map_err(|r| match r {
        PathRejection::FailedToDeserializePathParams(e) => match e.into_kind() {
            axum::extract::path::ErrorKind::InvalidUtf8InPathParam { key } if key == "flag" => {
                ApiError::InvalidFlagName
            }
            _ => ApiError::InvalidUser,
        },
        other => ApiError::Internal(Box::new(other)),
    })
}

fn flag_from(params: &HashMap<String, String>) -> Result<String, ApiError> {
    match params.get("flag") {
        Some(flag) if valid_flag_name(flag) => Ok(flag.clone()),
        _ => Err(ApiError::InvalidFlagName),
    }
}

/// The `{flag}` path parameter, validated; in the OpenAPI document, the one description of a flag
/// name, whose pattern accepts what [`valid_flag_name`] accepts.
#[derive(utoipa::IntoParams)]
#[into_params(names("flag"), parameter_in = Path)]
pub struct FlagParam(
    /// flag name
    #[param(pattern = r"^(?!\.\.?$)[A-Za-z0-9._-]{1,128}$")]
    pub String,
);

impl<S: Send + Sync> FromRequestParts<S> for FlagParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        flag_from(&params(parts).await?).map(FlagParam)
    }
}

/// The `{user}` and, on routes that have one, `{flag}` path parameters of an evaluation, validated
/// and borrowed from the request: the hot path copies no string.
pub struct EvalPath {
    params: RawPathParams,
    user: usize,
    flag: Option<usize>,
}

impl EvalPath {
    pub fn user(&self) -> &str {
        self.nth(self.user)
    }

    pub fn flag(&self) -> Option<&str> {
        self.flag.map(|i| self.nth(i))
    }

    fn nth(&self, i: usize) -> &str {
        self.params.iter().nth(i).map_or("", |(_, value)| value)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for EvalPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Ok(params) = RawPathParams::from_request_parts(parts, state).await else {
            // Rare (invalid UTF-8): the general extractor tells which parameter is at fault.
            params(parts).await?;
            return Err(ApiError::InvalidUser);
        };
        let position = |key: &str| params.iter().position(|(k, _)| k == key);
        let (flag, user) = (position("flag"), position("user"));
        let value = |i: usize| params.iter().nth(i).map_or("", |(_, value)| value);
        if let Some(i) = flag
            && !valid_flag_name(value(i))
        {
            return Err(ApiError::InvalidFlagName);
        }
        match user {
            Some(user) if valid_user(value(user)) => Ok(EvalPath { params, user, flag }),
            _ => Err(ApiError::InvalidUser),
        }
    }
}

/// Query parameters, with errors in our format.
pub struct ApiQuery<T>(pub T);

/// Whether the query string percent-decodes to UTF-8 (the decoder would otherwise replace broken
/// bytes with U+FFFD and carry on, answering for a user id nobody sent).
fn query_is_utf8(query: &str) -> bool {
    let raw = query.as_bytes();
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (raw[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&decoded).is_ok()
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        if !query_is_utf8(parts.uri.query().unwrap_or("")) {
            return Err(ApiError::InvalidQuery("the query string is not valid UTF-8".into()));
        }
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::InvalidQuery(e.body_text()))
    }
}
