//! OpenFeature remote evaluation: the protocol itself, and the real Python and Node SDKs.

use std::path::Path;
use std::time::Duration;

use rollout_controller::config::NamedToken;
use serde_json::{Value, json};

use crate::helpers::{ADMIN, RedisServer, TestApp, settings, spawn_with};

const READ_TOKEN: &str = "read-token-for-ofrep";

async fn ofrep_app(redis: &RedisServer) -> TestApp {
    let mut s = settings(Some(redis.url()));
    s.read_tokens = vec![NamedToken { name: "sdk".into(), secret: READ_TOKEN.to_owned().into() }];
    let app = spawn_with(s).await;
    app.create_flag("checkout", json!({"internal_users": ["ann"]})).await;
    app.must("checkout", "start").await;
    app.must("checkout", "advance").await;
    app.create_flag("dark", json!({})).await;
    app
}

fn post(app: &TestApp, path: &str, body: &str) -> reqwest::RequestBuilder {
    app.http
        .post(app.url(path))
        .bearer_auth(READ_TOKEN)
        .header("content-type", "application/json")
        .body(body.to_owned())
}

#[tokio::test]
async fn single_evaluations_follow_the_ofrep_shapes() {
    let redis = RedisServer::start();
    let app = ofrep_app(&redis).await;

    let resp =
        post(&app, "/ofrep/v1/evaluate/flags/checkout", r#"{"context": {"targetingKey": "user-1", "plan": "pro"}}"#)
            .send()
            .await
            .expect("answer");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body,
        json!({"key": "checkout", "value": false, "reason": "SPLIT", "variant": "off",
               "metadata": {"percent": 10, "bucket": 19, "stage": "10%", "version": 3}})
    );
    let ann =
        app.send(post(&app, "/ofrep/v1/evaluate/flags/checkout", r#"{"context": {"targetingKey": "ann"}}"#)).await;
    assert_eq!(
        (ann.body["value"].as_bool(), ann.body["reason"].as_str(), ann.body["variant"].as_str()),
        (Some(true), Some("TARGETING_MATCH"), Some("on"))
    );
    let dark = app.send(post(&app, "/ofrep/v1/evaluate/flags/dark", r#"{"context": {"targetingKey": "ann"}}"#)).await;
    assert_eq!((dark.body["value"].as_bool(), dark.body["reason"].as_str()), (Some(false), Some("DISABLED")));

    let errors = [
        ("/ofrep/v1/evaluate/flags/checkout", r#"{"context": {}}"#, 400, "TARGETING_KEY_MISSING"),
        ("/ofrep/v1/evaluate/flags/checkout", r#"{}"#, 400, "TARGETING_KEY_MISSING"),
        ("/ofrep/v1/evaluate/flags/checkout", r#"{"context": {"targetingKey": ""}}"#, 400, "TARGETING_KEY_MISSING"),
        ("/ofrep/v1/evaluate/flags/checkout", r#"{"context": {"targetingKey": 7}}"#, 400, "INVALID_CONTEXT"),
        ("/ofrep/v1/evaluate/flags/checkout", r#"{"context": "user-1"}"#, 400, "INVALID_CONTEXT"),
        ("/ofrep/v1/evaluate/flags/checkout", r#"{"context": {"#, 400, "PARSE_ERROR"),
        ("/ofrep/v1/evaluate/flags/checkout", "", 400, "PARSE_ERROR"),
        ("/ofrep/v1/evaluate/flags/checkout", "[1]", 400, "PARSE_ERROR"),
        ("/ofrep/v1/evaluate/flags/nope", r#"{"context": {"targetingKey": "u"}}"#, 404, "FLAG_NOT_FOUND"),
        ("/ofrep/v1/evaluate/flags/bad%2Fkey", r#"{"context": {"targetingKey": "u"}}"#, 404, "FLAG_NOT_FOUND"),
    ];
    for (path, body, status, code) in errors {
        let r = app.send(post(&app, path, body)).await;
        assert_eq!((r.status, r.body["errorCode"].as_str()), (status, Some(code)), "{path} {body}: {}", r.body);
        assert!(r.body["errorDetails"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let missing = app.send(post(&app, "/ofrep/v1/evaluate/flags/checkout", "{}")).await;
    assert_eq!(missing.body["key"], "checkout");
    // Lenient about the content type: SDKs and curl differ.
    let plain = app
        .send(
            app.http
                .post(app.url("/ofrep/v1/evaluate/flags/checkout"))
                .bearer_auth(READ_TOKEN)
                .body(r#"{"context":{"targetingKey":"u"}}"#),
        )
        .await;
    assert_eq!(plain.status, 200);

    // Tokens: Bearer or X-API-Key, read or admin; nothing else.
    let body = r#"{"context": {"targetingKey": "u"}}"#;
    let url = app.url("/ofrep/v1/evaluate/flags/checkout");
    assert_eq!(app.send(app.http.post(&url).body(body)).await.status, 401);
    assert_eq!(app.send(app.http.post(&url).bearer_auth("wrong-token").body(body)).await.status, 401);
    assert_eq!(app.send(app.http.post(&url).header("x-api-key", READ_TOKEN).body(body)).await.status, 200);
    assert_eq!(app.send(app.http.post(&url).bearer_auth(ADMIN).body(body)).await.status, 200);
}

#[tokio::test]
async fn bulk_evaluation_has_an_etag_that_changes_with_any_flag() {
    let redis = RedisServer::start();
    let app = ofrep_app(&redis).await;
    let bulk = || post(&app, "/ofrep/v1/evaluate/flags", r#"{"context": {"targetingKey": "ann"}}"#);
    let first = bulk().send().await.expect("answer");
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().expect("ascii").to_owned();
    let body: Value = first.json().await.expect("json");
    let keys: Vec<&str> =
        body["flags"].as_array().expect("flags").iter().map(|f| f["key"].as_str().expect("key")).collect();
    assert_eq!(keys, ["checkout", "dark"]);
    assert_eq!(body["flags"][0]["reason"], "TARGETING_MATCH");

    let cached = bulk().header("if-none-match", &etag).send().await.expect("answer");
    assert_eq!(cached.status(), 304);
    assert_eq!(cached.headers()["etag"].to_str().expect("ascii"), etag);
    assert!(cached.bytes().await.expect("body").is_empty());

    let other_user = post(&app, "/ofrep/v1/evaluate/flags", r#"{"context": {"targetingKey": "bob"}}"#)
        .header("if-none-match", &etag);
    assert_eq!(other_user.send().await.expect("answer").status(), 200, "the ETag is per context");

    app.must("dark", "start").await;
    let changed = bulk().header("if-none-match", &etag).send().await.expect("answer");
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"].to_str().expect("ascii"), etag);
    let missing = app.send(post(&app, "/ofrep/v1/evaluate/flags", "{}")).await;
    assert_eq!((missing.status, missing.body["errorCode"].as_str()), (400, Some("TARGETING_KEY_MISSING")));
}

/// Runs an SDK test program and returns its JSON output.
async fn run_sdk(program: &str, args: &[&str], app: &TestApp) -> Value {
    let base = format!("http://{}", app.addr);
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(program).args(args).args([base.as_str(), READ_TOKEN, "checkout", "1000"]).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} did not finish within 120 s"))
    .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(output.status.success(), "{program} failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("JSON from {program}: {}", String::from_utf8_lossy(&output.stdout)))
}

async fn agrees_with_the_api(app: &TestApp, sdk: &Value) {
    let users = sdk["users"].as_object().expect("users");
    assert_eq!(users.len(), 1000);
    let mut enabled = 0;
    for (user, got) in users {
        let expected = app
            .send(app.http.get(app.url(&format!("/flags/checkout/users/{user}"))).bearer_auth(READ_TOKEN))
            .await
            .body;
        assert_eq!(got["value"], expected["enabled"], "{user}");
        let reason = if expected["enabled"] == true || expected["reason"] == "not_in_rollout" { "SPLIT" } else { "?" };
        assert_eq!(got["reason"], reason, "{user}");
        assert_eq!(got["variant"], if expected["enabled"] == true { "on" } else { "off" });
        enabled += usize::from(expected["enabled"] == true);
    }
    assert!((70..=130).contains(&enabled), "{enabled} of 1000 users at 10%");
    assert_eq!(sdk["unknown"], json!({"value": true, "error_code": "FLAG_NOT_FOUND"}));
    assert_eq!(sdk["missing_key"], json!({"value": true, "error_code": "TARGETING_KEY_MISSING"}));
}

fn sdk_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ofrep"))
}

#[tokio::test]
async fn the_python_openfeature_sdk_agrees_with_the_api_for_1000_users() {
    let python = sdk_dir().join(".venv/bin/python");
    assert!(
        python.exists(),
        "missing the Python SDK: python3 -m venv tests/ofrep/.venv && tests/ofrep/.venv/bin/pip install -r tests/ofrep/requirements.txt"
    );
    let redis = RedisServer::start();
    let app = ofrep_app(&redis).await;
    let script = sdk_dir().join("python_client.py");
    let out = run_sdk(python.to_str().expect("utf-8 path"), &[script.to_str().expect("utf-8 path")], &app).await;
    agrees_with_the_api(&app, &out).await;
}

#[tokio::test]
async fn the_node_openfeature_sdk_agrees_with_the_api_for_1000_users() {
    assert!(
        sdk_dir().join("node_modules/@openfeature/ofrep-provider").exists(),
        "missing the Node SDK: npm ci --prefix tests/ofrep"
    );
    let redis = RedisServer::start();
    let app = ofrep_app(&redis).await;
    let script = sdk_dir().join("node_client.mjs");
    let out = run_sdk("node", &[script.to_str().expect("utf-8 path")], &app).await;
    agrees_with_the_api(&app, &out).await;
}
