//! The Rust SDK (`sdk/rust`) against the real service: its local answers equal the service's for
//! 10,000 users per state, a rollback made through the service reaches it over the stream, and its
//! reports land in the flag's window by cohort.

use std::time::Duration;

use rollout_sdk::{Client, Outcome, Reason};
use serde_json::{Value, json};

use crate::helpers::{ADMIN, Client as Service, FAST, RedisServer, ServiceProcess, TestApp, eventually};

const USERS: usize = 10_000;

fn users() -> Vec<String> {
    (0..USERS).map(|i| format!("user-{i}@example.com")).collect()
}

/// The service's answers for every user, from its batch route (itself checked against the
/// single-user route in `clients::batch_answers_equal_single_evaluations_…`).
async fn service_answers(app: &Service, flag: &str, users: &[String]) -> Vec<bool> {
    let reply = app.admin_post(&format!("/flags/{flag}/evaluate"), json!({"users": users})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["enabled"].as_array().expect("answers").iter().map(|v| v.as_bool().unwrap_or(false)).collect()
}

async fn sdk_caught_up(app: &Service, client: &Client, flags: &[&str]) {
    for flag in flags {
        let version = app.admin_get(&format!("/flags/{flag}")).await.body["version"].as_u64();
        eventually(Duration::from_secs(5), "the SDK holds the flag's current version", || async {
            client.flag(flag).map(|f| f.version) == version
        })
        .await;
    }
}

/// One flag per state the SDKs must answer like the service: internal users only, salted at 10%
/// with an internal user, 50%, rolled back, pending. Internal users `ann@corp` and `bob@corp`.
pub async fn flags_in_every_state(app: &Service) {
    app.create_flag("internal", json!({"internal_users": ["ann@corp", "bob@corp"]})).await;
    app.must("internal", "start").await;
    app.create_flag("salted", json!({"salt": "checkout", "internal_users": ["ann@corp"]})).await;
    app.must("salted", "start").await;
    app.must("salted", "advance").await;
    app.create_flag("half", json!({"stages": [{"name": "50%", "percent": 50}]})).await;
    app.must("half", "start").await;
    app.create_flag("gone", json!({"stages": [{"name": "30%", "percent": 30}]})).await;
    app.must("gone", "start").await;
    app.must("gone", "rollback").await;
    app.create_flag("waiting", json!({})).await;
}

#[tokio::test]
async fn the_rust_sdk_answers_like_the_service_in_every_state_and_follows_a_rollback() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    let mut users = users();
    users.extend(["ann@corp".to_owned(), "bob@corp".to_owned()]);
    flags_in_every_state(&app).await;

    let client = Client::builder(app.base()).token(ADMIN).build().await.expect("the SDK starts");
    let flags = ["internal", "salted", "half", "gone", "waiting"];
    sdk_caught_up(&app, &client, &flags).await;
    for flag in flags {
        let expected = service_answers(&app, flag, &users).await;
        let mismatches = users.iter().zip(&expected).filter(|(u, e)| client.is_enabled(flag, u) != **e).count();
        println!("FIGURES rust SDK vs service, flag {flag}: {} users, {mismatches} mismatches", users.len());
        assert_eq!(mismatches, 0, "{flag}");
    }
    for user in ["ann@corp", "user-1@example.com"] {
        let single = app.get(&format!("/flags/salted/users/{user}")).await.body;
        let local = client.evaluation("salted", user);
        assert_eq!(local.enabled, single["enabled"].as_bool().unwrap_or(false), "{user}");
        assert_eq!(local.reason.as_str(), single["reason"].as_str().unwrap_or(""), "{user}");
    }
    assert!(!client.is_enabled("no-such-flag", "ann@corp"), "an unknown flag answers the default");

    // A rollback through the service reaches the SDK over the stream, and wakes its listeners
    // once the new configuration is in place.
    let mut changes = client.changes();
    changes.mark_unchanged();
    app.must("half", "rollback").await;
    let rolled_back = || client.evaluation("half", "user-1@example.com").reason == Reason::FlagOff;
    tokio::time::timeout(Duration::from_secs(5), async {
        while !rolled_back() {
            changes.changed().await.expect("the client is open");
        }
    })
    .await
    .expect("the rollback reaches the SDK and wakes client.changes()");
    assert!(users.iter().all(|u| !client.is_enabled("half", u)));
    client.close().await;
}

#[tokio::test]
async fn the_rust_sdk_reports_outcomes_by_cohort_into_the_flags_window() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    app.create_flag("f", json!({"stages": [{"name": "10%", "percent": 10}]})).await;
    app.must("f", "start").await;
    let client = Client::builder(app.base())
        .token(ADMIN)
        .report_interval(Duration::from_millis(100))
        .build()
        .await
        .expect("the SDK starts");
    sdk_caught_up(&app, &client, &["f"]).await;
    let users = users();
    let treatment = users.iter().filter(|u| client.is_enabled("f", u)).count() as u64;
    for user in &users {
        client.record("f", user, Outcome { error: false, latency_ms: Some(12.0) });
    }
    client.close().await;
    let health = eventually_health(&app).await;
    let ratio = &health["sample_ratio"];
    assert_eq!(ratio["treatment_requests"].as_u64(), Some(treatment), "{health}");
    assert_eq!(ratio["control_requests"].as_u64(), Some(USERS as u64 - treatment), "{health}");
    assert_eq!(ratio["mismatch"], false, "a correctly wired app serves its share");
}

async fn eventually_health(app: &TestApp) -> Value {
    eventually(Duration::from_secs(5), "both cohorts' reports land", || async {
        app.admin_get("/flags/f/health").await.body.get("sample_ratio").is_some()
    })
    .await;
    app.admin_get("/flags/f/health").await.body
}

/// A client that reconnects at once (50 ms to 200 ms) and gives up on a silent stream in 2 s.
async fn quick_client(service: &Service) -> Client {
    Client::builder(service.base())
        .token(ADMIN)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .stream_idle_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("the SDK starts")
}

/// Two replicas on one Redis, flag `f` at 50%, a quick client on A caught up, and A's answers for
/// the users.
struct Replicas {
    a: ServiceProcess,
    b: ServiceProcess,
    client: Client,
    users: Vec<String>,
    before: Vec<bool>,
}

impl Replicas {
    async fn start(redis: &RedisServer) -> Self {
        let a = ServiceProcess::spawn(&redis.url(), &[], FAST).await;
        let b = ServiceProcess::spawn(&redis.url(), &[], FAST).await;
        a.create_flag("f", json!({"stages": [{"name": "50%", "percent": 50}]})).await;
        a.must("f", "start").await;
        let client = quick_client(&a).await;
        sdk_caught_up(&a, &client, &["f"]).await;
        let users = users();
        let before = service_answers(&a, "f", &users).await;
        Self { a, b, client, users, before }
    }
}

/// How many of `users` the client answers differently from `expected`.
fn mismatches(client: &Client, flag: &str, users: &[String], expected: &[bool]) -> usize {
    users.iter().zip(expected).filter(|(u, e)| client.is_enabled(flag, u) != **e).count()
}

#[tokio::test]
async fn the_rust_sdk_keeps_answering_while_its_service_restarts_and_converges_after() {
    let redis = RedisServer::start();
    let Replicas { mut a, b, client, users, before } = Replicas::start(&redis).await;
    assert!(before.iter().any(|on| *on), "half the users are on");

    a.kill();
    eventually(Duration::from_secs(5), "the SDK sees its stream gone", || async { !client.is_connected() }).await;
    assert_eq!(mismatches(&client, "f", &users, &before), 0, "the last configuration is served while disconnected");
    // Changed through another replica while the SDK's own is down.
    b.must("f", "rollback").await;
    assert_eq!(mismatches(&client, "f", &users, &before), 0, "nothing reached the SDK yet");

    a.restart().await;
    sdk_caught_up(&a, &client, &["f"]).await;
    assert!(client.is_connected());
    assert_eq!(client.evaluation("f", "user-1@example.com").reason, Reason::FlagOff);
    assert!(users.iter().all(|u| !client.is_enabled("f", u)), "the rollback made meanwhile is served");
    client.close().await;
}

#[tokio::test]
async fn the_rust_sdk_keeps_answering_while_redis_fails_and_follows_changes_once_it_is_back() {
    let mut redis = RedisServer::start();
    let Replicas { a, b, client, users, before } = Replicas::start(&redis).await;

    redis.stop();
    // The service refuses changes while its store is down; the SDK keeps the configuration.
    eventually(Duration::from_secs(5), "a change is refused while Redis is down", || async {
        a.command("f", "rollback").await.status == 503
    })
    .await;
    assert_eq!(mismatches(&client, "f", &users, &before), 0, "the SDK keeps answering during the outage");

    // Redis comes back empty; the replicas restore the flag from their snapshots, and a change
    // made through the other replica reaches the SDK through its own replica's feed and stream.
    redis.start_again();
    eventually(Duration::from_secs(15), "a change is taken again once Redis is back", || async {
        b.command("f", "rollback").await.status == 200
    })
    .await;
    eventually(Duration::from_secs(10), "the rollback through B reaches the SDK on A", || async {
        client.evaluation("f", "user-1@example.com").reason == Reason::FlagOff
    })
    .await;
    assert!(users.iter().all(|u| !client.is_enabled("f", u)));
    client.close().await;
}
