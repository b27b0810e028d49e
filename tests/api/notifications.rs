//! Outbound notifications, rollback hooks and Prometheus metrics, with a real local receiver.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::post;
use serde_json::{Value, json};

use crate::helpers::{RedisServer, TestApp, eventually};

pub type Inbox = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver on a free port: records every POST body by path.
pub async fn receiver() -> (String, Inbox) {
    let inbox: Inbox = Arc::default();
    let app = axum::Router::new()
        .route(
            "/{path}",
            post(|State(inbox): State<Inbox>, Path(path): Path<String>, Json(body): Json<Value>| async move {
                inbox.lock().expect("inbox").push((path, body));
                "ok"
            }),
        )
        .with_state(Arc::clone(&inbox));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, inbox)
}

pub fn received(inbox: &Inbox, path: &str) -> Vec<Value> {
    inbox.lock().expect("inbox").iter().filter(|(p, _)| p == path).map(|(_, b)| b.clone()).collect()
}

#[tokio::test]
async fn every_transition_is_announced_once_and_rollbacks_call_the_flags_hooks() {
    let redis = RedisServer::start();
    let (url, inbox) = receiver().await;
    let app = TestApp::on(&redis).settings(|s| s.notify_urls = vec![format!("{url}/slack").into()]).spawn().await;
    app.create_flag("checkout", json!({"rollback_hooks": [format!("{url}/pause-campaigns")], "decision": "threshold"}))
        .await;
    app.must("checkout", "start").await;
    app.must("checkout", "advance").await;
    app.push("checkout", json!({"requests": 500, "errors": 10})).await;

    eventually(Duration::from_secs(5), "4 transitions announced", || async { received(&inbox, "slack").len() == 4 })
        .await;
    eventually(Duration::from_secs(5), "the rollback hook called", || async {
        received(&inbox, "pause-campaigns").len() == 1
    })
    .await;
    let messages = received(&inbox, "slack");
    let actions: Vec<&str> = messages.iter().map(|m| m["action"].as_str().expect("action")).collect();
    assert_eq!(actions, ["create", "start", "advance", "rollback"]);
    let rollback = &messages[3];
    for key in ["text", "flag", "action", "from", "to", "actor", "reason", "version", "at"] {
        assert!(rollback.get(key).is_some(), "missing {key} in {rollback}");
    }
    assert_eq!(rollback["flag"], "checkout");
    assert_eq!(rollback["actor"], "controller");
    assert_eq!(rollback["reason"], "error_rate 0.02 > 0.01 over 500 requests");
    assert_eq!(rollback["version"], 4);
    assert_eq!(rollback["from"], json!({"status": "running", "stage": "10%", "percent": 10}));
    assert_eq!(rollback["to"]["status"], "rolled_back");
    assert_eq!(
        rollback["text"],
        ":rotating_light: checkout: rollback 10% (10%) → rolled_back (0%) by controller: error_rate 0.02 > 0.01 over 500 requests"
    );
    assert_eq!(received(&inbox, "pause-campaigns")[0], *rollback);
    // Nothing is sent twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received(&inbox, "slack").len(), 4);
}

#[tokio::test]
async fn dead_or_hanging_receivers_never_delay_transitions_and_failures_are_counted() {
    let redis = RedisServer::start();
    // One port that refuses connections, one that accepts and never answers.
    let refused = format!("http://127.0.0.1:{}/x", crate::helpers::free_port());
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hanging_url = format!("http://{}/x", hanging.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hanging.accept().await {
            held.push(socket);
        }
    });
    let app = TestApp::on(&redis).settings(|s| s.notify_urls = vec![refused.into(), hanging_url.into()]).spawn().await;
    app.create_flag("f", json!({})).await;

    let started = Instant::now();
    for _ in 0..5 {
        app.must("f", "start").await;
        app.must("f", "rollback").await;
        app.must("f", "resume").await;
        app.must("f", "rollback").await;
        assert_eq!(app.command("f", "start").await.status, 409);
        // Back to pending is not a transition; re-create the flag instead.
        app.admin_delete("/flags/f").await;
        app.create_flag("f", json!({})).await;
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "30 writes took {took:?} with dead receivers");

    // The refused receiver fails after its retries (200 + 400 + 800 ms of backoff) and is counted.
    eventually(Duration::from_secs(10), "a notification failure counted", || async {
        let text = app
            .http
            .get(app.url("/metrics"))
            .bearer_auth(crate::helpers::ADMIN)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        metric(&text, "rollout_notification_failures_total", &[]).is_some_and(|v| v >= 1.0)
    })
    .await;
}

/// The value of a sample with exactly these labels (among others).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_with_the_state() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    app.create_flag("f", json!({})).await;
    app.must("f", "start").await;
    app.must("f", "advance").await;
    for i in 0..20 {
        app.evaluate("f", &format!("user-{i}")).await;
    }
    let scrape = || async {
        let r = app.http.get(app.url("/metrics")).bearer_auth(crate::helpers::ADMIN).send().await.expect("metrics");
        assert!(r.headers()["content-type"].to_str().expect("ascii").starts_with("text/plain"));
        r.text().await.expect("text")
    };
    let text = scrape().await;
    assert_eq!(metric(&text, "rollout_flag_percent", &[("flag", "f")]), Some(10.0));
    assert_eq!(metric(&text, "rollout_flag_stage_index", &[("flag", "f")]), Some(1.0));
    assert_eq!(metric(&text, "rollout_flag_status", &[("flag", "f"), ("status", "running")]), Some(1.0));
    assert_eq!(metric(&text, "rollout_transitions_total", &[("flag", "f"), ("action", "advance")]), Some(1.0));
    assert_eq!(metric(&text, "rollout_leader", &[]), Some(1.0));
    let evaluated: f64 = ["in_rollout", "not_in_rollout"]
        .iter()
        .filter_map(|r| metric(&text, "rollout_evaluations_total", &[("result", r)]))
        .sum();
    assert_eq!(evaluated, 20.0);
    assert!(text.contains("rollout_evaluation_duration_seconds_bucket{le=\""), "a histogram, not a summary");
    assert!(text.contains("# TYPE rollout_evaluation_duration_seconds histogram"));
    let anonymous = app.http.get(app.url("/metrics")).send().await.expect("metrics");
    assert_eq!(anonymous.status(), 401, "/metrics names every flag: it needs a token");

    app.push("f", json!({"requests": 200, "errors": 100})).await;
    let text = scrape().await;
    assert_eq!(metric(&text, "rollout_flag_percent", &[("flag", "f")]), Some(0.0));
    assert_eq!(metric(&text, "rollout_flag_status", &[("flag", "f"), ("status", "rolled_back")]), Some(1.0));
    assert_eq!(metric(&text, "rollout_flag_status", &[("flag", "f"), ("status", "running")]), Some(0.0));
    assert_eq!(metric(&text, "rollout_rollbacks_total", &[("flag", "f"), ("guard", "error_rate")]), Some(1.0));
    assert_eq!(metric(&text, "rollout_guard_value", &[("flag", "f"), ("guard", "error_rate")]), Some(0.5));
}

/// The samples of an exposition (no comments, no blank lines).
fn series(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

#[tokio::test]
async fn metrics_forget_every_series_of_deleted_flags_on_every_replica() {
    const FLAGS: usize = 200;
    let redis = RedisServer::start();
    let a = TestApp::on(&redis).spawn().await;
    let b = TestApp::on(&redis).spawn().await;
    let scrape = |app: &TestApp| {
        let req = app.http.get(app.url("/metrics")).bearer_auth(crate::helpers::ADMIN);
        async move { req.send().await.expect("metrics").text().await.expect("text") }
    };
    let baseline = [series(&scrape(&a).await).len(), series(&scrape(&b).await).len()];
    for i in 0..FLAGS {
        let flag = format!("gone-{i}");
        a.create_flag(&flag, json!({})).await;
        a.must(&flag, "start").await;
        // Judged on the push: a guard value, then a rollback, both per-flag series.
        let reply = a.push(&flag, json!({"requests": 200, "errors": 100})).await;
        assert_eq!(reply.body["action"], "rollback", "{}", reply.body);
    }
    eventually(Duration::from_secs(10), "B holds every flag", || async {
        b.get("/readyz").await.body["flags"] == FLAGS
    })
    .await;
    let text = scrape(&a).await;
    for name in ["rollout_flag_percent", "rollout_transitions_total", "rollout_rollbacks_total", "rollout_guard_value"]
    {
        assert!(metric(&text, name, &[("flag", "gone-7")]).is_some(), "{name} names a live flag");
    }
    assert_eq!(
        metric(&scrape(&b).await, "rollout_flag_status", &[("flag", "gone-7"), ("status", "rolled_back")]),
        Some(1.0)
    );

    for i in 0..FLAGS {
        let r = a.admin_delete(&format!("/flags/gone-{i}")).await;
        assert_eq!(r.status, 204, "{}", r.body);
    }
    eventually(Duration::from_secs(10), "B holds no flag", || async { b.get("/readyz").await.body["flags"] == 0 })
        .await;
    for (replica, app) in [("a", &a), ("b", &b)] {
        let text = scrape(app).await;
        let left: Vec<&str> = series(&text).into_iter().filter(|s| s.contains("flag=\"gone-")).collect();
        assert!(
            left.is_empty(),
            "replica {replica} still has {} series of deleted flags: {:?}",
            left.len(),
            &left[..left.len().min(5)]
        );
    }
    let after = [series(&scrape(&a).await).len(), series(&scrape(&b).await).len()];
    assert_eq!(after, baseline, "as many series as before the {FLAGS} flags were created");
    println!(
        "FIGURES metrics after deletes: {FLAGS} flags created, started, rolled back and deleted; series before {baseline:?}, after {after:?}, 0 naming a deleted flag"
    );
}
