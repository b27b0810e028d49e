//! OpenFeature remote evaluation: the protocol itself, and the real Python and Node SDKs.

use std::path::Path;
use std::time::Duration;

use rollout_controller::config::NamedToken;
use serde_json::{Value, json};

use crate::helpers::{ADMIN, RedisServer, ServiceProcess, TestApp, eventually};

const READ_TOKEN: &str = "read-token-for-ofrep";

async fn ofrep_app(redis: &RedisServer) -> TestApp {
    let app = TestApp::on(redis)
        .settings(|s| s.read_tokens = vec![NamedToken { name: "sdk".into(), secret: READ_TOKEN.to_owned().into() }])
        .spawn()
        .await;
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

/// A bulk evaluation for `user` through `service`: its status, ETag and flags' keys and versions.
async fn bulk_at(
    service: &ServiceProcess,
    user: &str,
    if_none_match: Option<&str>,
) -> (u16, String, Vec<(String, u64)>) {
    let mut req = service
        .http
        .post(service.url("/ofrep/v1/evaluate/flags"))
        .bearer_auth(ADMIN)
        .json(&json!({"context": {"targetingKey": user}}));
    if let Some(etag) = if_none_match {
        req = req.header("if-none-match", etag);
    }
    let resp = req.send().await.expect("answer");
    let status = resp.status().as_u16();
    let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).expect("an ETag").to_owned();
    let body: Value = if status == 200 { resp.json().await.expect("json") } else { json!({"flags": []}) };
    let flags = body["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .map(|f| (f["key"].as_str().expect("key").to_owned(), f["metadata"]["version"].as_u64().expect("version")))
        .collect();
    (status, etag, flags)
}

#[tokio::test]
async fn two_replicas_holding_the_same_flags_give_the_same_bulk_etag() {
    const FLAGS: usize = 30;
    let redis = RedisServer::start();
    let a = ServiceProcess::spawn(&redis.url(), &[], &[]).await;
    let b = ServiceProcess::spawn(&redis.url(), &[], &[]).await;
    for i in 0..FLAGS {
        assert_eq!(a.admin_put(&format!("/flags/f{i:02}"), json!({})).await.status, 201);
    }
    let same_flags = |want: u64| {
        let (a, b) = (&a, &b);
        async move {
            let (_, _, on_a) = bulk_at(a, "ann", None).await;
            let (_, _, on_b) = bulk_at(b, "ann", None).await;
            on_a.len() == FLAGS && on_a == on_b && on_a.iter().any(|(key, v)| key == "f07" && *v == want)
        }
    };
    eventually(Duration::from_secs(10), "both replicas hold every flag", || same_flags(1)).await;

    let mut before = Vec::new();
    for user in ["ann", "bob", "user-3"] {
        let (_, on_a, _) = bulk_at(&a, user, None).await;
        let (_, on_b, _) = bulk_at(&b, user, None).await;
        assert_eq!(on_a, on_b, "{user}: the same flags give the same ETag on both replicas");
        assert_eq!(bulk_at(&b, user, Some(&on_a)).await.0, 304, "{user}: A's ETag is current on B");
        assert_eq!(bulk_at(&a, user, Some(&on_b)).await.0, 304, "{user}: B's ETag is current on A");
        before.push(on_a);
    }
    assert_ne!(before[0], before[1], "the ETag is per context");

    // A change through A: both replicas move to one new ETag, and the old one is no longer current.
    assert_eq!(a.admin_post("/flags/f07/start", json!({})).await.status, 200);
    eventually(Duration::from_secs(10), "the start reaches both replicas", || same_flags(2)).await;
    let (status, on_b, _) = bulk_at(&b, "ann", Some(&before[0])).await;
    assert_eq!(status, 200, "the old ETag is stale on B");
    assert_ne!(on_b, before[0]);
    assert_eq!(bulk_at(&a, "ann", None).await.1, on_b);
    assert_eq!(bulk_at(&a, "ann", Some(&on_b)).await.0, 304);
    println!(
        "FIGURES ofrep etag: 2 replicas, {FLAGS} flags, 3 users: same ETag on both, 304 across replicas; one change moved both"
    );
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
