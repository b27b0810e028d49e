//! The benchmark's reference server (`benches/reference`, bare axum) answers
//! `GET /flag/{user}` as the service does, so that `scripts/bench-http.sh` compares like with like:
//! the same keys and value types, and the same users enabled at the same percentage.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Client, TestApp};

#[path = "../../benches/reference/src/app.rs"]
mod bare_axum;

/// The reference server's routes served on a free loopback port, as its `main` serves them.
async fn reference_server() -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, bare_axum::router()).await });
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    Client { addr, http }
}

/// Each key with the JSON type of its value.
fn shape(body: &Value) -> Vec<(String, &'static str)> {
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_u64() => "unsigned integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let mut keys: Vec<_> = body.as_object().expect("an object").iter().map(|(k, v)| (k.clone(), kind(v))).collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn the_reference_server_answers_flag_for_user_in_the_service_s_shape_and_buckets() {
    let service = TestApp::in_memory().spawn().await;
    let percent = bare_axum::PERCENT;
    service.create_flag("default", json!({"stages": [{"name": "half", "percent": percent}]})).await;
    service.must("default", "start").await;
    let reference = reference_server().await;

    let users: Vec<String> =
        (0..200).map(|i| format!("user-{i}")).chain(["alice@example.com".into(), "%C3%A9mile".into()]).collect();
    let mut enabled = 0;
    for user in &users {
        let ours = service.get(&format!("/flag/{user}")).await;
        let theirs = reference.get(&format!("/flag/{user}")).await;
        assert_eq!((ours.status, theirs.status), (200, 200), "{user}: {} / {}", ours.body, theirs.body);
        assert_eq!(shape(&ours.body), shape(&theirs.body), "{user}");
        for key in ["user", "enabled", "bucket", "percent", "reason"] {
            assert_eq!(ours.body[key], theirs.body[key], "{user}: {key}");
        }
        enabled += usize::from(ours.body["enabled"] == true);
    }
    // Both halves of the population are compared, not only one answer.
    assert!((70..=130).contains(&enabled), "{enabled} of {} users enabled at {percent}%", users.len());
    let hello = reference.http.get(reference.url("/hello")).send().await.expect("an answer");
    assert_eq!(hello.text().await.expect("a body"), "hello");
}
