//! The reference server's routes: bare axum 0.8, no layer, no state, the extractors and
//! `Json` any axum service would use. It depends on nothing of the service (only `md-5`, `serde`
//! and axum), so the benchmark compares the service with the framework's own floor.
//!
//! `GET /hello` answers a fixed text; `GET /flag/{user}` buckets the user with MD5 (the same
//! function as the service: `u32` of the digest's first 4 bytes, modulo 100) against a fixed 50%
//! and answers the same JSON keys and value types as the service's `GET /flag/{user}`.

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use md5::{Digest, Md5};
use serde::Serialize;

/// The rollout percentage every user is bucketed against (the benchmark's flag is at 50%).
pub const PERCENT: u8 = 50;

/// The service's answer, key for key.
#[derive(Serialize)]
pub struct Evaluation {
    flag: &'static str,
    user: String,
    enabled: bool,
    bucket: u8,
    percent: u8,
    stage: &'static str,
    status: &'static str,
    version: u64,
    reason: &'static str,
}

pub fn router() -> Router {
    Router::new().route("/hello", get(hello)).route("/flag/{user}", get(flag))
}

async fn hello() -> &'static str {
    "hello"
}

async fn flag(Path(user): Path<String>) -> Json<Evaluation> {
    let digest = Md5::digest(user.as_bytes());
    let bucket = (u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 100) as u8;
    let enabled = bucket < PERCENT;
    Json(Evaluation {
        flag: "default",
        user,
        enabled,
        bucket,
        percent: PERCENT,
        stage: "half",
        status: "running",
        version: 2,
        reason: if enabled { "in_rollout" } else { "not_in_rollout" },
    })
}
