//! Guard signal sources against the real programs: Alertmanager, Prometheus, and signed
//! Customer.io webhooks.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rollout_controller::config::NamedToken;
use rollout_controller::sources::customerio::sign;
use serde_json::{Value, json};

use crate::helpers::{ADMIN, RedisServer, TestApp, eventually, free_port};

const ALERT_TOKEN: &str = "alert-token-for-tests";
const CIO_KEY: &str = "whsec_test";

/// A child process killed on drop, with its own temporary directory.
struct Peer {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_peer(program: &str, args: &[String], dir: tempfile::TempDir) -> Peer {
    let child =
        Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!("{program} must be installed (apt-get install prometheus prometheus-alertmanager): {e}")
        });
    Peer { child, _dir: dir }
}

async fn wait_http_ok(url: &str) {
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(30), &format!("{url} answers"), || async {
        client.get(url).timeout(Duration::from_secs(1)).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
}

async fn sources_app(redis: &RedisServer) -> TestApp {
    TestApp::on(redis)
        .settings(|s| {
            s.alert_tokens = vec![NamedToken { name: "alertmanager".into(), secret: ALERT_TOKEN.to_owned().into() }];
            s.metrics_tokens = vec![NamedToken { name: "app".into(), secret: "metrics-token-1".to_owned().into() }];
            s.cio_signing_keys = vec!["whsec_old_rotated".to_owned().into(), CIO_KEY.to_owned().into()];
            s.cio_mapping.campaigns.insert("42".into(), "email".into());
            s.cio_mapping.default_flag = Some("fallback".into());
        })
        .spawn()
        .await
}

async fn status(app: &TestApp, flag: &str) -> String {
    app.admin_get(&format!("/flags/{flag}")).await.body["status"].as_str().expect("status").to_owned()
}

async fn history(app: &TestApp, flag: &str) -> Vec<Value> {
    app.admin_get(&format!("/flags/{flag}/history")).await.body["events"].as_array().cloned().expect("events")
}

async fn alert(app: &TestApp, body: Value) -> crate::helpers::Reply {
    app.send(app.http.post(app.url("/alerts/alertmanager")).bearer_auth(ALERT_TOKEN).json(&body)).await
}

fn am_alert(status: &str, labels: Value, fingerprint: &str) -> Value {
    json!({"status": status, "labels": labels, "annotations": {"summary": "5xx above 2%"},
           "startsAt": "2026-11-23T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": fingerprint})
}

#[tokio::test]
async fn a_real_alertmanager_alert_rolls_the_flag_back_within_10s() {
    let redis = RedisServer::start();
    let app = sources_app(&redis).await;
    app.create_flag("checkout", json!({"stages": [{"name": "half", "percent": 50}]})).await;
    app.must("checkout", "start").await;

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = format!(
        r#"
route:
  receiver: rollout
  group_by: [alertname, flag]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: rollout
    webhook_configs:
      - url: http://{addr}/alerts/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: {ALERT_TOKEN}
"#,
        addr = app.addr
    );
    std::fs::write(dir.path().join("am.yml"), config).expect("write config");
    let args = vec![
        format!("--config.file={}", dir.path().join("am.yml").display()),
        format!("--storage.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".to_owned(),
    ];
    let _am = spawn_peer("/usr/bin/prometheus-alertmanager", &args, dir);
    let am = format!("http://127.0.0.1:{port}");
    wait_http_ok(&format!("{am}/-/ready")).await;

    let posted = reqwest::Client::new()
        .post(format!("{am}/api/v2/alerts"))
        .json(&json!([{"labels": {"alertname": "HighErrorRate", "flag": "checkout", "severity": "page"},
                        "annotations": {"summary": "5xx above 2% on checkout"}}]))
        .send()
        .await
        .expect("alertmanager answers");
    assert!(posted.status().is_success(), "{}", posted.status());

    eventually(Duration::from_secs(10), "the alert rolls the flag back", || async {
        app.percent("checkout").await == 0
    })
    .await;
    assert_eq!(status(&app, "checkout").await, "rolled_back");
    let last = &history(&app, "checkout").await[0];
    assert_eq!(last["action"], "rollback");
    assert_eq!(last["actor"], "alert");
    assert_eq!(last["reason"], "alert:HighErrorRate: 5xx above 2% on checkout");
}

#[tokio::test]
async fn alert_payloads_roll_back_once_per_episode_and_report_what_they_could_not_use() {
    let redis = RedisServer::start();
    let app = sources_app(&redis).await;
    for flag in ["a", "b"] {
        app.create_flag(flag, json!({})).await;
        app.must(flag, "start").await;
    }
    let payload = json!({"version": "4", "status": "firing", "receiver": "rollout", "alerts": [
        am_alert("firing", json!({"alertname": "HighErrorRate", "flag": "a"}), "f1"),
        am_alert("firing", json!({"alertname": "QueueBacklog", "rollout_flag": "b"}), "f2"),
        am_alert("firing", json!({"alertname": "Other", "flag": "nope"}), "f3"),
        am_alert("firing", json!({"alertname": "NoFlag"}), "f4"),
    ]});
    let r = alert(&app, payload.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["rolled_back"], json!(["a", "b"]));
    assert_eq!(r.body["unknown_flags"], json!(["nope"]));
    assert_eq!(r.body["without_flag"], 1);
    assert_eq!(status(&app, "a").await, "rolled_back");
    assert_eq!(history(&app, "b").await[0]["reason"], "alert:QueueBacklog: 5xx above 2%");

    // Alertmanager repeats the same still-firing alerts: the flags they rolled back stay so.
    let r = alert(&app, payload.clone()).await;
    assert_eq!((r.body["duplicates"].as_u64(), r.body["rolled_back"].clone()), (Some(2), json!([])));
    // The operator resumes `a` while its alert still fires: the next repeat rolls it back again
    // (this episode has not rolled back the resumed stage); `b`, still off, reads duplicate.
    app.must("a", "resume").await;
    let r = alert(&app, payload).await;
    assert_eq!((r.body["rolled_back"].clone(), r.body["duplicates"].as_u64()), (json!(["a"]), Some(1)));
    assert_eq!(status(&app, "a").await, "rolled_back");

    // Resolved: recorded in the history, never resumes.
    let resolved = json!({"status": "resolved", "alerts": [am_alert("resolved", json!({"alertname": "QueueBacklog", "flag": "b"}), "f2")]});
    let r = alert(&app, resolved).await;
    assert_eq!(r.body["resolved"], 1);
    assert_eq!(status(&app, "b").await, "rolled_back");
    let last = &history(&app, "b").await[0];
    assert_eq!((last["action"].as_str(), last["actor"].as_str()), (Some("alert_resolved"), Some("alert")));

    // A new firing episode of the same alert (new startsAt) rolls back again.
    app.must("a", "resume").await;
    let mut again = am_alert("firing", json!({"alertname": "HighErrorRate", "flag": "a"}), "f1");
    again["startsAt"] = json!("2026-11-23T12:00:00Z");
    let r = alert(&app, json!({"status": "firing", "alerts": [again]})).await;
    assert_eq!(r.body["rolled_back"], json!(["a"]));

    // Scopes: the alert token only posts alerts; other tokens may not post alerts.
    let forbidden = app.send(app.http.get(app.url("/flags")).bearer_auth(ALERT_TOKEN)).await;
    assert_eq!((forbidden.status, forbidden.body["error"].as_str()), (403, Some("forbidden")));
    let metrics_token = app
        .send(
            app.http.post(app.url("/alerts/alertmanager")).bearer_auth("metrics-token-1").json(&json!({"alerts": []})),
        )
        .await;
    assert_eq!(metrics_token.status, 403);
    let none = app.send(app.http.post(app.url("/alerts/alertmanager")).json(&json!({"alerts": []}))).await;
    assert_eq!(none.status, 401);
    let admin =
        app.send(app.http.post(app.url("/alerts/alertmanager")).bearer_auth(ADMIN).json(&json!({"alerts": []}))).await;
    assert_eq!(admin.status, 200);
    let bad = app
        .send(app.http.post(app.url("/alerts/alertmanager")).bearer_auth(ALERT_TOKEN).json(&json!({"alerts": "x"})))
        .await;
    assert_eq!((bad.status, bad.body["error"].as_str()), (422, Some("invalid_body")));

    let debug = app.admin_get("/debug/signals").await.body;
    let am = &debug["sources"]["alertmanager"];
    assert_eq!(am["counts"]["rollbacks"], 4);
    assert_eq!(am["counts"]["duplicates"], 3);
    assert_eq!(am["rejected"]["forbidden"], 1);
    assert!(am["last_received_at"].as_str().is_some());
}

/// What one delivery of a firing alert did to `flag`: `rolled_back`, `already_off` or `duplicate`.
async fn fire(app: &TestApp, flag: &str, fingerprint: &str) -> &'static str {
    let r = alert(app, json!({"status": "firing", "alerts": [am_alert("firing", json!({"flag": flag}), fingerprint)]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let did = |field: &str| r.body[field].as_array().is_some_and(|flags| flags.iter().any(|f| f == flag));
    match (did("rolled_back"), did("already_off"), r.body["duplicates"].as_u64()) {
        (true, false, Some(0)) => "rolled_back",
        (false, true, Some(0)) => "already_off",
        (false, false, Some(1)) => "duplicate",
        _ => panic!("unexpected summary {}", r.body),
    }
}

/// An app with one flag `f`, created and, if `started`, started.
async fn app_with_flag(redis: &RedisServer, started: bool) -> TestApp {
    let app = sources_app(redis).await;
    app.create_flag("f", json!({})).await;
    if started {
        app.must("f", "start").await;
    }
    app
}

#[tokio::test]
async fn an_alert_that_came_while_its_flag_was_pending_rolls_it_back_once_started() {
    let redis = RedisServer::start();
    let app = app_with_flag(&redis, false).await;
    assert_eq!(fire(&app, "f", "e1").await, "already_off");
    app.must("f", "start").await;
    assert_eq!(fire(&app, "f", "e1").await, "rolled_back");
    // While the rollback it made stands, a repeat is a duplicate.
    assert_eq!(fire(&app, "f", "e1").await, "duplicate");
    assert_eq!(status(&app, "f").await, "rolled_back");
}

#[tokio::test]
async fn an_alert_that_came_while_its_flag_was_rolled_back_rolls_it_back_once_resumed() {
    let redis = RedisServer::start();
    let app = app_with_flag(&redis, true).await;
    app.must("f", "rollback").await;
    assert_eq!(fire(&app, "f", "e1").await, "already_off");
    app.must("f", "resume").await;
    assert_eq!(fire(&app, "f", "e1").await, "rolled_back");
    assert_eq!(fire(&app, "f", "e1").await, "duplicate");
}

#[tokio::test]
async fn an_alert_still_firing_after_a_resume_rolls_the_flag_back_again() {
    let redis = RedisServer::start();
    let app = app_with_flag(&redis, true).await;
    assert_eq!(fire(&app, "f", "e1").await, "rolled_back");
    assert_eq!(fire(&app, "f", "e1").await, "duplicate");
    // The operator resumes while the alert still fires: the episode has not rolled back this stage.
    app.must("f", "resume").await;
    assert_eq!(fire(&app, "f", "e1").await, "rolled_back");
    assert_eq!(fire(&app, "f", "e1").await, "duplicate");
    assert_eq!(status(&app, "f").await, "rolled_back");
}

#[tokio::test]
async fn an_alert_that_rolled_a_flag_back_acts_again_on_the_flag_deleted_and_re_created() {
    let redis = RedisServer::start();
    let app = app_with_flag(&redis, true).await;
    assert_eq!(fire(&app, "f", "e1").await, "rolled_back");
    assert_eq!(app.admin_delete("/flags/f").await.status, 204);
    // A new incarnation (told apart by its creation time, in ms): re-created a second later.
    app.clock.advance_secs(1);
    app.create_flag("f", json!({})).await;
    app.must("f", "start").await;
    assert_eq!(fire(&app, "f", "e1").await, "rolled_back");
    assert_eq!(fire(&app, "f", "e1").await, "duplicate");
    assert_eq!(status(&app, "f").await, "rolled_back");
    let debug = app.admin_get("/debug/signals").await.body;
    assert_eq!(debug["sources"]["alertmanager"]["counts"]["rollbacks"], 2);
    assert_eq!(debug["sources"]["alertmanager"]["counts"]["duplicates"], 1);
}

#[tokio::test]
async fn an_alert_status_other_than_firing_or_resolved_is_refused_not_read_as_resolved() {
    let redis = RedisServer::start();
    let app = app_with_flag(&redis, true).await;
    let before = history(&app, "f").await;
    for (payload_status, alert_status) in [("firing", "pending"), ("firing", "Firing"), ("unknown", "firing")] {
        let body = json!({"status": payload_status, "alerts": [am_alert(alert_status, json!({"flag": "f"}), "e1")]});
        let r = alert(&app, body).await;
        assert_eq!((r.status, r.body["error"].as_str()), (422, Some("invalid_body")), "{alert_status}: {}", r.body);
    }
    assert_eq!(history(&app, "f").await, before, "nothing recorded");
    assert_eq!(fire(&app, "f", "e1").await, "rolled_back", "the refused payloads used nothing up");
}

/// A Customer.io delivery event, signed with `key` at the app's clock (or `ts`).
fn cio(app: &TestApp, key: &str, ts: i64, event: &Value) -> reqwest::RequestBuilder {
    let body = serde_json::to_vec(event).expect("json");
    let ts = ts.to_string();
    app.http
        .post(app.url("/webhooks/customerio"))
        .header("content-type", "application/json")
        .header("x-cio-timestamp", &ts)
        .header("x-cio-signature", sign(key.as_bytes(), &ts, &body))
        .body(body)
}

fn email_event(id: &str, metric: &str, campaign: u64) -> Value {
    json!({"event_id": id, "object_type": "email", "metric": metric, "timestamp": 1_700_000_000,
           "data": {"campaign_id": campaign, "delivery_id": format!("d-{id}"), "recipient": "x@example.com"}})
}

async fn sent_samples(app: &TestApp, flag: &str) -> u64 {
    let health = app.admin_get(&format!("/flags/{flag}/health")).await.body;
    health["guards"].as_array().expect("guards").iter().find(|g| g["guard"] == "bounce_rate").expect("bounce_rate")["samples"]
        .as_u64()
        .expect("samples")
}

#[tokio::test]
async fn signed_customerio_events_drive_a_bounce_rollback_and_forged_stale_or_replayed_ones_change_nothing() {
    let redis = RedisServer::start();
    let app = sources_app(&redis).await;
    // Only sent and bounced events here: the delivery guard is off for this flag.
    app.create_flag(
        "email",
        json!({"min_samples": 20, "decision": "threshold", "thresholds": {"delivery_rate": null},
               "stages": [{"name": "half", "percent": 50}]}),
    )
    .await;
    app.must("email", "start").await;
    let now = crate::helpers::T0 / 1000;

    // The published test vector is accepted as is (our clock is at its timestamp).
    let vector = app
        .send(
            app.http
                .post(app.url("/webhooks/customerio"))
                .header("x-cio-timestamp", "1700000000")
                .header("x-cio-signature", "2c8ae587619a74e1285c5ba12760784e6908c947ddd97e5e0284e3d8e06fdaf9")
                .body(r#"{"event_id":"01E4C4CT6YDC7Y5M7FE1GWWPQJ"}"#),
        )
        .await;
    assert_eq!((vector.status, vector.body["status"].as_str()), (200, Some("ignored")));

    for i in 0..19 {
        let r = app.send(cio(&app, CIO_KEY, now, &email_event(&format!("s{i}"), "sent", 42))).await;
        assert_eq!(
            (r.status, r.body["status"].as_str(), r.body["flag"].as_str()),
            (200, Some("counted"), Some("email")),
            "{}",
            r.body
        );
    }
    assert_eq!(sent_samples(&app, "email").await, 19);

    // Forged, stale, unsigned and replayed deliveries: 401 or duplicate, and nothing counted.
    let forged = app.send(cio(&app, "whsec_wrong", now, &email_event("x1", "sent", 42))).await;
    assert_eq!((forged.status, forged.body["error"].as_str()), (401, Some("invalid_signature")));
    let stale = app.send(cio(&app, CIO_KEY, now - 301, &email_event("x2", "sent", 42))).await;
    assert_eq!((stale.status, stale.body["error"].as_str()), (401, Some("stale_timestamp")));
    let future = app.send(cio(&app, CIO_KEY, now + 301, &email_event("x3", "sent", 42))).await;
    assert_eq!(future.status, 401);
    let unsigned = app.send(app.http.post(app.url("/webhooks/customerio")).json(&email_event("x4", "sent", 42))).await;
    assert_eq!((unsigned.status, unsigned.body["error"].as_str()), (401, Some("missing_signature")));
    let mut tampered = cio(&app, CIO_KEY, now, &email_event("x5", "sent", 42)).build().expect("request");
    *tampered.body_mut() = Some(serde_json::to_vec(&email_event("x5", "bounced", 42)).expect("json").into());
    assert_eq!(app.exec(tampered).await.status, 401);
    let replay = app.send(cio(&app, CIO_KEY, now, &email_event("s0", "sent", 42))).await;
    assert_eq!((replay.status, replay.body["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(sent_samples(&app, "email").await, 19, "nothing forged, stale or replayed was counted");
    assert_eq!(status(&app, "email").await, "running");

    // Unknown metrics and object types are acknowledged and ignored.
    let opened = app.send(cio(&app, CIO_KEY, now, &email_event("o1", "opened", 42))).await;
    assert_eq!((opened.status, opened.body["status"].as_str()), (200, Some("ignored")));
    let sms =
        app.send(cio(&app, CIO_KEY, now, &json!({"event_id": "p1", "object_type": "push", "metric": "sent"}))).await;
    assert_eq!((sms.status, sms.body["status"].as_str()), (200, Some("ignored")));

    // The rotated-out key still verifies; one more sent (20 ≥ min_samples) and two bounces: 2/21 > 5%.
    let r = app.send(cio(&app, "whsec_old_rotated", now, &email_event("s19", "sent", 42))).await;
    assert_eq!(r.body["status"], "counted");
    app.send(cio(&app, CIO_KEY, now, &email_event("b1", "bounced", 42))).await;
    let r = app.send(cio(&app, CIO_KEY, now, &email_event("b2", "bounced", 42))).await;
    assert_eq!(r.body["action"], "rollback", "{}", r.body);
    assert_eq!(status(&app, "email").await, "rolled_back");
    assert_eq!(history(&app, "email").await[0]["reason"], "bounce_rate 0.1 > 0.05 over 20 sent");

    let debug = app.admin_get("/debug/signals").await.body;
    let c = &debug["sources"]["customerio"];
    assert_eq!(c["rejected"]["invalid_signature"], 2);
    assert_eq!(c["rejected"]["stale_timestamp"], 2);
    assert_eq!(c["rejected"]["missing_signature"], 1);
    assert_eq!(c["counts"]["duplicate"], 1);
    assert_eq!(c["counts"]["sent"], 20);
}

#[tokio::test]
async fn a_customerio_event_the_store_failed_to_count_is_counted_when_customerio_retries() {
    let redis = RedisServer::start();
    let (app, now) = email_app(&redis).await;
    let first = app.send(cio(&app, CIO_KEY, now, &email_event("c1", "sent", 42))).await;
    assert_eq!(first.body["status"], "counted", "{}", first.body);

    // The store fails between marking the event seen and counting it: the stage's bucket (made by
    // the first event) is swapped for a string, so the count (HINCRBY) fails while SET and DEL work.
    let mut redis_cli = redis.connection();
    let buckets: Vec<String> = redis::cmd("KEYS").arg("*{email}:m:*").query(&mut redis_cli).expect("keys");
    let [bucket] = buckets.as_slice() else { panic!("one bucket expected: {buckets:?}") };
    let aside = format!("{bucket}:aside");
    let _: () = redis::cmd("RENAME").arg(bucket).arg(&aside).query(&mut redis_cli).expect("rename");
    let _: () = redis::cmd("SET").arg(bucket).arg("not a hash").query(&mut redis_cli).expect("set");
    let failed = app.send(cio(&app, CIO_KEY, now, &email_event("c2", "sent", 42))).await;
    assert_eq!((failed.status, failed.body["error"].as_str()), (503, Some("store_unavailable")), "{}", failed.body);

    // Healthy again; Customer.io retries the same delivery: counted, once.
    let _: () = redis::cmd("RENAME").arg(&aside).arg(bucket).query(&mut redis_cli).expect("rename back");
    let retry = app.send(cio(&app, CIO_KEY, now, &email_event("c2", "sent", 42))).await;
    assert_eq!((retry.status, retry.body["status"].as_str()), (200, Some("counted")), "{}", retry.body);
    let again = app.send(cio(&app, CIO_KEY, now, &email_event("c2", "sent", 42))).await;
    assert_eq!(again.body["status"], "duplicate");
    assert_eq!(sent_samples(&app, "email").await, 2);
}

/// An app with the running flag `email`, and the app's clock in Unix seconds.
async fn email_app(redis: &RedisServer) -> (TestApp, i64) {
    let app = sources_app(redis).await;
    app.create_flag("email", json!({"stages": [{"name": "half", "percent": 50}]})).await;
    app.must("email", "start").await;
    (app, crate::helpers::T0 / 1000)
}

#[tokio::test]
async fn customerio_event_ids_are_compared_whole_and_over_long_ones_are_refused() {
    let redis = RedisServer::start();
    let (app, now) = email_app(&redis).await;

    // Two ids alike in their first 200 bytes are two events; past 200 bytes an id is refused.
    let stem = "x".repeat(199);
    for id in [format!("{stem}a"), format!("{stem}b")] {
        let r = app.send(cio(&app, CIO_KEY, now, &email_event(&id, "sent", 42))).await;
        assert_eq!((r.status, r.body["status"].as_str()), (200, Some("counted")), "{}", r.body);
    }
    for id in [format!("{stem}aa"), format!("{stem}ab"), "y".repeat(10_000)] {
        let r = app.send(cio(&app, CIO_KEY, now, &email_event(&id, "sent", 42))).await;
        assert_eq!((r.status, r.body["error"].as_str()), (422, Some("invalid_body")), "{}", r.body);
        assert!(r.body["message"].as_str().is_some_and(|m| m.starts_with("event_id: at most 200 bytes")));
    }
    assert_eq!(sent_samples(&app, "email").await, 2);
}

#[tokio::test]
async fn customerio_timestamps_at_the_ends_of_i64_are_stale_not_an_overflow() {
    let redis = RedisServer::start();
    let (app, now) = email_app(&redis).await;
    for (i, ts) in [now + i64::MIN, i64::MIN, i64::MAX, now - i64::MAX].into_iter().enumerate() {
        let r = app.send(cio(&app, CIO_KEY, ts, &email_event(&format!("t{i}"), "sent", 42))).await;
        assert_eq!((r.status, r.body["error"].as_str()), (401, Some("stale_timestamp")), "{ts}: {}", r.body);
    }
    assert_eq!(sent_samples(&app, "email").await, 0);
}

#[tokio::test]
async fn the_customerio_endpoint_is_absent_without_signing_keys() {
    let app = TestApp::in_memory().spawn().await;
    let r = app.send(app.http.post(app.url("/webhooks/customerio")).json(&json!({}))).await;
    assert_eq!((r.status, r.body["error"].as_str()), (404, Some("not_found")));
}

/// Serves `/metrics` with the given exposition text.
async fn exporter(text: &'static str) -> String {
    let app = axum::Router::new().route("/metrics", axum::routing::get(move || async move { text }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr.to_string()
}

#[tokio::test]
async fn a_promql_guard_read_from_a_real_prometheus_rolls_back_and_a_query_without_data_never_does() {
    let redis = RedisServer::start();
    let app = sources_app(&redis).await;
    let target = exporter(
        "# TYPE app_error_ratio gauge\napp_error_ratio{flag=\"checkout\"} 0.5\napp_error_ratio{flag=\"quiet\"} 0.001\n",
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .expect("write config");
    let args = vec![
        format!("--config.file={}", dir.path().join("prometheus.yml").display()),
        format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    let _prometheus = spawn_peer("/usr/bin/prometheus", &args, dir);
    let prom = format!("http://127.0.0.1:{port}");
    wait_http_ok(&format!("{prom}/-/ready")).await;

    let with_query = |query: &str| {
        json!({"stages": [{"name": "ten", "percent": 10, "soak_secs": 3600}],
               "prometheus": {"url": prom, "interval_secs": 1, "queries": {"error_rate": query}}})
    };
    app.create_flag("checkout", with_query("app_error_ratio{flag=\"checkout\"}")).await;
    app.create_flag("empty", with_query("app_error_ratio{flag=\"absent\"}")).await;
    app.create_flag("many", with_query("app_error_ratio")).await;
    app.create_flag("nan", with_query("0/0")).await;
    for flag in ["checkout", "empty", "many", "nan"] {
        app.must(flag, "start").await;
    }
    // Each tick is a second later on the manual clock, so every tick runs the queries.
    eventually(Duration::from_secs(30), "the Prometheus guard rolls checkout back", || async {
        app.clock.advance_secs(1);
        app.tick().await;
        status(&app, "checkout").await == "rolled_back"
    })
    .await;
    let reason = history(&app, "checkout").await[0]["reason"].as_str().expect("reason").to_owned();
    assert!(reason.starts_with("error_rate 0.5 > 0.01 over "), "{reason}");
    assert!(reason.ends_with(" queries"), "{reason}");

    for flag in ["empty", "many", "nan"] {
        assert_eq!(status(&app, flag).await, "running", "{flag}: no reading must never roll back");
        let health = app.admin_get(&format!("/flags/{flag}/health")).await.body;
        let guard = health["guards"]
            .as_array()
            .expect("guards")
            .iter()
            .find(|g| g["guard"] == "error_rate")
            .cloned()
            .expect("guard");
        assert_eq!(
            (guard["verdict"].as_str(), guard["source"].as_str()),
            (Some("insufficient_data"), Some("prometheus")),
            "{flag}"
        );
    }
    let debug = app.admin_get("/debug/signals").await.body;
    let p = &debug["sources"]["prometheus"];
    assert!(p["rejected"]["empty"].as_u64() >= Some(1), "{p}");
    assert!(p["rejected"]["too_many_series"].as_u64() >= Some(1), "{p}");
    assert!(p["rejected"]["not_a_number"].as_u64() >= Some(1), "{p}");
}
