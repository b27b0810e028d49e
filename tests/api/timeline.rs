//! The runbook's timeline, end to end on a real Redis: scheduled starts, checks, approval gates,
//! advance windows across a daylight-saving change, the emergency stop and the freeze.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use rollout_controller::clock::{Clock, ManualClock};
use rollout_controller::config::{NamedToken, Settings};
use serde_json::{Value, json};

use crate::helpers::{ADMIN, RedisServer, T0, TestApp, eventually};

/// The status a check endpoint answers with, and the requests it received.
type CheckState = (Arc<AtomicU16>, Arc<Mutex<Vec<Value>>>);

/// A check endpoint on a free port: answers with the status the test sets, records each request.
struct CheckServer {
    url: String,
    status: Arc<AtomicU16>,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl CheckServer {
    async fn start(status: u16) -> Self {
        let status = Arc::new(AtomicU16::new(status));
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let app = axum::Router::new()
            .route(
                "/check",
                post(|State((status, seen)): State<CheckState>, Json(body): Json<Value>| async move {
                    seen.lock().expect("seen").push(body);
                    let code = StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
                    (code, "smoke test: 3 of 40 scenarios failed")
                }),
            )
            .with_state((Arc::clone(&status), Arc::clone(&seen)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/check", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, status, seen }
    }

    fn requests(&self) -> Vec<Value> {
        self.seen.lock().expect("seen").clone()
    }
}

fn at(ms: i64) -> String {
    rollout_controller::clock::rfc3339(ms)
}

async fn status(app: &TestApp, flag: &str) -> (String, String) {
    let f = app.admin_get(&format!("/flags/{flag}")).await.body;
    (f["status"].as_str().unwrap_or("").to_owned(), f["stage"].as_str().unwrap_or("").to_owned())
}

async fn actions(app: &TestApp, flag: &str) -> Vec<(String, String)> {
    let events =
        app.admin_get(&format!("/flags/{flag}/history")).await.body["events"].as_array().cloned().unwrap_or_default();
    events
        .iter()
        .rev()
        .map(|e| (e["action"].as_str().unwrap_or("").to_owned(), e["reason"].as_str().unwrap_or("").to_owned()))
        .collect()
}

const HEALTHY: fn() -> Value = || json!({"requests": 5000, "errors": 0});

#[tokio::test]
async fn a_scheduled_start_happens_at_its_time_and_bad_times_are_refused() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    app.create_flag("f", json!({})).await;
    for bad in [at(T0 - 1000), at(T0 + 400 * 24 * 3600 * 1000), "tomorrow".into()] {
        let reply = app.admin_post("/flags/f/start", json!({"at": bad})).await;
        assert_eq!((reply.status, reply.body["error"].as_str()), (422, Some("invalid_body")), "{bad}: {}", reply.body);
    }
    let scheduled = app.admin_post("/flags/f/start", json!({"at": at(T0 + 3_600_000)})).await;
    assert_eq!((scheduled.status, scheduled.body["status"].as_str()), (200, Some("scheduled")), "{}", scheduled.body);
    assert_eq!(scheduled.body["scheduled_for"], "2023-11-14T23:13:20.000Z");
    assert_eq!(app.evaluate("f", "anyone").await["enabled"], false);
    app.clock.advance_secs(3599);
    assert!(app.tick().await.is_empty(), "not yet");
    app.clock.advance_secs(1);
    assert_eq!(app.tick().await.len(), 1);
    assert_eq!(status(&app, "f").await, ("running".into(), "internal".into()));
    let history = actions(&app, "f").await;
    assert_eq!(
        history.last().map(|(a, r)| (a.as_str(), r.as_str())),
        Some(("start", "scheduled start at 2023-11-14T23:13:20.000Z"))
    );

    // Cancel returns a scheduled flag to pending.
    app.create_flag("g", json!({})).await;
    app.admin_post("/flags/g/start", json!({"at": at(T0 + 7_200_000)})).await;
    let cancelled = app.admin_post("/flags/g/cancel", json!({"reason": "launch moved"})).await;
    assert_eq!(cancelled.body["status"], "pending", "{}", cancelled.body);
    app.clock.advance_secs(7200);
    app.tick().await;
    assert_eq!(status(&app, "g").await.0, "pending");
}

#[tokio::test]
async fn a_failing_smoke_check_cancels_the_scheduled_start() {
    let redis = RedisServer::start();
    let smoke = CheckServer::start(500).await;
    let staging = CheckServer::start(200).await;
    let app = TestApp::on(&redis).spawn().await;
    app.create_flag(
        "f",
        json!({"checks": [
            {"name": "staging-suite", "url": staging.url, "when": "before_start", "offset_secs": 86400, "timeout_secs": 5},
            {"name": "smoke", "url": smoke.url, "when": "before_start", "offset_secs": 43200, "timeout_secs": 5}]}),
    )
    .await;
    app.admin_post("/flags/f/start", json!({"at": at(T0 + 86_400_000)})).await;
    app.tick().await;
    assert_eq!(staging.requests().len(), 1, "T-24h: the staging suite ran");
    assert_eq!(staging.requests()[0]["flag"], "f");
    assert!(smoke.requests().is_empty(), "the smoke test waits for T-12h");
    let checks = app.admin_get("/flags/f/checks").await.body;
    assert_eq!(checks["checks"][0]["last_run"]["passed"], true, "{checks}");
    app.clock.advance_secs(43_200);
    assert_eq!(app.tick().await.len(), 1, "T-12h: the smoke test failed and cancelled the start");
    assert_eq!(status(&app, "f").await.0, "pending");
    let history = actions(&app, "f").await;
    let failed = history.iter().find(|(a, _)| a == "check_failed").expect("check_failed audited");
    assert_eq!(failed.1, "check smoke failed: HTTP 500: smoke test: 3 of 40 scenarios failed");
    assert_eq!(history.last().map(|(a, r)| (a.as_str(), r.as_str())), Some(("cancel", failed.1.as_str())));
    let checks = app.admin_get("/flags/f/checks").await.body;
    let smoke_run = &checks["checks"][1]["last_run"];
    assert_eq!((smoke_run["passed"].as_bool(), smoke_run["status"].as_u64()), (Some(false), Some(500)), "{checks}");

    // An immediate start runs the before_start checks at once and refuses on a failure.
    let refused = app.admin_post("/flags/f/start", json!({})).await;
    assert_eq!((refused.status, refused.body["error"].as_str()), (409, Some("check_failed")), "{}", refused.body);
    smoke.status.store(200, Ordering::SeqCst);
    assert_eq!(app.admin_post("/flags/f/start", json!({})).await.body["status"], "running");
}

#[tokio::test]
async fn an_approval_gate_holds_the_stage_until_two_operators_approve() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis)
        .settings(|s| {
            s.admin_tokens.push(NamedToken { name: "bob".into(), secret: "bob-token-for-tests".to_owned().into() })
        })
        .spawn()
        .await;
    app.create_flag(
        "f",
        json!({"stages": [{"name": "internal", "internal_only": true, "soak_secs": 60},
                          {"name": "10%", "percent": 10, "soak_secs": 60, "requires_approval": true, "approvals": 2}]}),
    )
    .await;
    app.admin_post("/flags/f/start", json!({})).await;
    app.clock.advance_secs(60);
    app.push("f", HEALTHY()).await;
    assert!(app.tick().await.is_empty(), "healthy, but the next stage needs approval");
    let held: Vec<_> = actions(&app, "f").await.into_iter().filter(|(a, _)| a == "held").collect();
    assert_eq!(held, [("held".to_owned(), "stage 10% waits for 2 more approval(s)".to_owned())]);
    let shown = app.admin_get("/flags/f").await.body;
    assert_eq!(
        shown["waiting_for"],
        json!({"what": "approval", "stage": "10%", "detail": "stage 10% waits for 2 more approval(s)"})
    );

    let approve = |token: &'static str| {
        let app = &app;
        async move {
            app.send(
                app.http
                    .post(app.url("/flags/f/approve"))
                    .bearer_auth(token)
                    .json(&json!({"stage": "10%", "reason": "dashboards look fine"})),
            )
            .await
        }
    };
    assert_eq!(approve(ADMIN).await.status, 200);
    assert_eq!(approve(ADMIN).await.status, 200, "ann again: audited, counted once");
    assert!(app.tick().await.is_empty(), "one distinct operator of two");
    let wrong = app.admin_post("/flags/f/approve", json!({"stage": "internal"})).await;
    assert_eq!((wrong.status, wrong.body["error"].as_str()), (409, Some("no_approval_awaited")));
    assert_eq!(approve("bob-token-for-tests").await.status, 200);
    assert_eq!(app.tick().await.len(), 1);
    assert_eq!(status(&app, "f").await, ("running".into(), "10%".into()));
    let approvals: Vec<_> = actions(&app, "f").await.into_iter().filter(|(a, _)| a == "approve").collect();
    assert_eq!(approvals.len(), 3);
}

#[tokio::test]
async fn a_failing_during_check_rolls_the_flag_back() {
    let redis = RedisServer::start();
    let synthetic = CheckServer::start(200).await;
    let app = TestApp::on(&redis).spawn().await;
    app.create_flag(
        "f",
        json!({"checks": [{"name": "synthetic", "url": synthetic.url, "when": "during", "interval_secs": 60, "timeout_secs": 5}]}),
    )
    .await;
    app.admin_post("/flags/f/start", json!({})).await;
    app.tick().await;
    assert_eq!(synthetic.requests().len(), 1);
    synthetic.status.store(503, Ordering::SeqCst);
    app.clock.advance_secs(30);
    app.tick().await;
    assert_eq!(synthetic.requests().len(), 1, "not due before its interval");
    app.clock.advance_secs(30);
    let outcomes = app.tick().await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(status(&app, "f").await.0, "rolled_back");
    let last = actions(&app, "f").await.pop().expect("an event");
    assert_eq!(
        last,
        ("rollback".to_owned(), "check synthetic failed: HTTP 503: smoke test: 3 of 40 scenarios failed".to_owned())
    );
}

#[tokio::test]
async fn an_advance_window_holds_an_advance_over_a_weekend_and_a_daylight_saving_change() {
    let redis = RedisServer::start();
    // Thursday 2026-03-26 14:00 UTC = 15:00 CET: inside Mon–Thu 09:00–16:00 Berlin.
    let thursday = jiff_ms("2026-03-26T14:00:00Z");
    let app = TestApp::on(&redis).clock(ManualClock::new(thursday)).spawn().await;
    app.create_flag(
        "f",
        json!({"stages": [{"name": "internal", "internal_only": true, "soak_secs": 5400}, {"name": "10%", "percent": 10}],
               "advance_window": {"days": ["mon", "tue", "wed", "thu"], "from": "09:00", "to": "16:00", "time_zone": "Europe/Berlin"}}),
    )
    .await;
    app.admin_post("/flags/f/start", json!({})).await;
    // The soak ends at 15:30 UTC = 16:30 CET: outside the window.
    app.clock.advance_secs(5400);
    app.push("f", HEALTHY()).await;
    assert!(app.tick().await.is_empty());
    let held = actions(&app, "f").await.into_iter().find(|(a, _)| a == "held").expect("held");
    // Clocks go forward on Sunday 29 March: Monday 09:00 in Berlin is 07:00 UTC, not 08:00.
    assert_eq!(held.1, "outside the advance window; it opens at 2026-03-30T07:00:00.000Z");
    let monday_early = jiff_ms("2026-03-30T06:59:00Z");
    app.clock.advance_ms(monday_early - app.clock.now_ms());
    app.push("f", HEALTHY()).await;
    assert!(app.tick().await.is_empty(), "08:59 in Berlin");
    app.clock.advance_secs(60);
    assert_eq!(app.tick().await.len(), 1, "09:00 in Berlin");
    assert_eq!(status(&app, "f").await.1, "10%");
}

fn jiff_ms(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>().expect("a time").as_millisecond()
}

#[tokio::test]
async fn rollback_all_stops_500_flags_in_mixed_states_under_one_incident_and_every_replica_agrees() {
    let redis = RedisServer::start();
    let a = TestApp::on(&redis).spawn().await;
    let b = TestApp::on(&redis).spawn().await;
    let mut expected = 0;
    for i in 0..500 {
        let flag = format!("f{i}");
        a.create_flag(&flag, json!({})).await;
        match i % 5 {
            0 | 1 => {
                a.must(&flag, "start").await;
                expected += 1;
            }
            2 => {
                a.must(&flag, "start").await;
                a.must(&flag, "pause").await;
                expected += 1;
            }
            3 => {
                a.admin_post(&format!("/flags/{flag}/start"), json!({"at": at(T0 + 3_600_000)})).await;
                expected += 1;
            }
            _ => {}
        }
    }
    let started = Instant::now();
    let reply = a.admin_post("/rollback-all", json!({"reason": "P1: checkout down"})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let changed = reply.body["changed"].as_array().cloned().unwrap_or_default();
    assert_eq!(changed.len(), expected);
    let incident = reply.body["incident"].as_str().expect("an incident id").to_owned();
    // Replica B agrees when its configuration carries A's ETag (every flag's name, incarnation and
    // version): one small request per look, so the look itself does not slow the measurement.
    let answered = Instant::now();
    let config = a.http.get(a.url("/flags/config")).bearer_auth(ADMIN).send().await.expect("A's configuration");
    let etag = config.headers().get("etag").cloned().expect("an ETag");
    eventually(Duration::from_secs(5), "replica B agrees", || async {
        let b_config = b.http.get(b.url("/flags/config")).bearer_auth(ADMIN).header("if-none-match", etag.clone());
        b_config.send().await.is_ok_and(|r| r.status() == 304)
    })
    .await;
    let agreed = answered.elapsed();
    let flags = b.admin_get("/flags").await.body["flags"].as_array().cloned().unwrap_or_default();
    assert!(flags.iter().all(|f| matches!(f["status"].as_str(), Some("rolled_back" | "pending"))));
    println!(
        "FIGURES rollback-all: {expected} flags stopped, replica B agreed {agreed:?} after the answer ({:?} in all)",
        started.elapsed()
    );
    assert!(agreed < Duration::from_millis(100), "B agreed after {agreed:?}");
    for f in ["f0", "f2", "f3"] {
        let last = actions(&a, f).await.pop().expect("an event");
        assert!(last.1.contains(&incident), "{f}: {last:?}");
    }
    assert_eq!(status(&a, "f3").await.0, "pending", "a scheduled start is cancelled");
    assert_eq!(status(&a, "f4").await.0, "pending", "a pending flag is left alone");
}

#[tokio::test]
async fn a_freeze_holds_advances_through_a_leader_change_and_rollbacks_still_happen() {
    let redis = RedisServer::start();
    let short_lease = |s: &mut Settings| s.lease = Duration::from_millis(300);
    let a = TestApp::on(&redis).settings(short_lease).spawn().await;
    a.create_flag("f", json!({"stages": [{"name": "internal", "internal_only": true, "soak_secs": 60}, {"name": "10%", "percent": 10}]})).await;
    a.create_flag("g", json!({})).await;
    a.must("f", "start").await;
    a.must("g", "start").await;
    a.tick().await;
    assert!(a.is_leader());
    let frozen = a.admin_post("/freeze", json!({"reason": "incident INC-42"})).await;
    assert_eq!((frozen.status, frozen.body["frozen"].as_bool()), (200, Some(true)), "{}", frozen.body);
    a.clock.advance_secs(60);
    a.push("f", HEALTHY()).await;
    assert!(a.tick().await.is_empty(), "frozen: no advance");
    // Rollbacks still happen while frozen.
    let bad = a.push("g", json!({"requests": 500, "errors": 100})).await;
    assert_eq!(bad.body["action"], "rollback");
    // The leader goes away; another replica takes the lease and still sees the freeze.
    a.kill();
    let b = TestApp::on(&redis).settings(short_lease).spawn().await;
    b.clock.advance_secs(60);
    b.push("f", HEALTHY()).await;
    eventually(Duration::from_secs(5), "B leads", || async { b.tick().await.is_empty() && b.is_leader() }).await;
    assert_eq!(status(&b, "f").await.1, "internal", "still frozen under the new leader");
    let state = b.admin_get("/freeze").await.body;
    assert_eq!((state["by"].as_str(), state["reason"].as_str()), (Some("operator:ann"), Some("incident INC-42")));
    b.admin_post("/unfreeze", json!({"reason": "resolved"})).await;
    assert_eq!(b.tick().await.len(), 1);
    assert_eq!(status(&b, "f").await.1, "10%");
}

#[tokio::test]
async fn the_cli_schedules_cancels_approves_freezes_and_stops_everything() {
    let redis = RedisServer::start();
    // `--in 12h` is counted from the operator's clock: the service runs on the system clock here.
    let app = TestApp::on(&redis).system_clock().spawn().await;
    app.create_flag(
        "a",
        json!({"stages": [{"name": "one", "percent": 10}, {"name": "two", "percent": 50, "requires_approval": true}]}),
    )
    .await;
    app.create_flag("b", json!({})).await;
    let scheduled = app.cli(&["--json", "start", "b", "--in", "12h"]).await;
    assert_eq!(scheduled.code, 0, "{}", scheduled.stderr);
    assert_eq!(scheduled.json()["status"], "scheduled");
    let cancelled = app.cli(&["cancel", "b", "--reason", "moved"]).await;
    assert!(cancelled.stdout.contains("pending"), "{}", cancelled.stdout);
    assert_eq!(
        app.cli(&["start", "b", "--at", "2099-01-01T00:00:00Z"]).await.code,
        1,
        "more than a year ahead: refused"
    );
    app.cli(&["start", "a"]).await;
    let approved = app.cli(&["--json", "approve", "a", "--stage", "two", "--reason", "ok"]).await;
    assert_eq!(approved.code, 0, "{}", approved.stderr);
    let frozen = app.cli(&["freeze", "--reason", "INC-7"]).await;
    assert!(frozen.stdout.starts_with("frozen by operator:ann"), "{}", frozen.stdout);
    assert_eq!(app.cli(&["rollback", "--all"]).await.code, 2, "--all needs a reason");
    let stopped = app.cli(&["rollback", "--all", "--reason", "P1"]).await;
    assert!(stopped.stdout.starts_with("incident incident-"), "{}", stopped.stdout);
    assert!(stopped.stdout.contains("running") && stopped.stdout.contains("rolled_back"), "{}", stopped.stdout);
    let unfrozen = app.cli(&["unfreeze", "--reason", "over"]).await;
    assert!(unfrozen.stdout.starts_with("not frozen"), "{}", unfrozen.stdout);
}

#[tokio::test]
async fn the_post_launch_review_is_posted_once_when_its_time_comes() {
    let redis = RedisServer::start();
    let (url, inbox) = crate::notifications::receiver().await;
    let app = TestApp::on(&redis).settings(|s| s.notify_urls = vec![format!("{url}/slack").into()]).spawn().await;
    app.create_flag("f", json!({"review_after_secs": 3600})).await;
    app.admin_post("/flags/f/start", json!({})).await;
    app.clock.advance_secs(3599);
    app.tick().await;
    app.clock.advance_secs(1);
    app.tick().await;
    app.tick().await;
    let reviews = || {
        crate::notifications::received(&inbox, "slack")
            .into_iter()
            .filter(|m| m["action"] == "review_posted")
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(5), "the review arrives", || async { !reviews().is_empty() }).await;
    let posted = reviews();
    assert_eq!(posted.len(), 1, "posted once");
    let text = posted[0]["text"].as_str().unwrap_or("");
    assert!(text.starts_with("# Post-launch review: f"), "{text}");
    assert!(text.contains("## Stages"), "{text}");
    let recorded: Vec<_> = actions(&app, "f").await.into_iter().filter(|(a, _)| a == "review_posted").collect();
    assert_eq!(recorded, [("review_posted".to_owned(), "post-launch review, 1h after the start".to_owned())]);
    // The report still answers on request.
    assert_eq!(app.admin_get("/flags/f/report").await.status, 200);
}

#[tokio::test]
async fn a_failing_before_stage_check_holds_the_flag_and_runs_again_after_its_interval() {
    let redis = RedisServer::start();
    let canary = CheckServer::start(500).await;
    let app = TestApp::on(&redis).spawn().await;
    app.create_flag(
        "f",
        json!({"stages": [{"name": "internal", "internal_only": true, "soak_secs": 60}, {"name": "10%", "percent": 10}],
               "checks": [{"name": "canary-e2e", "url": canary.url, "when": "before_stage:10%", "interval_secs": 300, "timeout_secs": 5}]}),
    )
    .await;
    app.admin_post("/flags/f/start", json!({})).await;
    app.clock.advance_secs(60);
    app.push("f", HEALTHY()).await;
    assert!(app.tick().await.is_empty(), "the check failed: held");
    assert_eq!(canary.requests().len(), 1);
    assert_eq!(canary.requests()[0]["stage"], "10%");
    let shown = app.admin_get("/flags/f").await.body;
    assert_eq!(shown["waiting_for"]["what"], "check", "{shown}");
    let checks = app.admin_get("/flags/f/checks").await.body;
    assert_eq!(checks["checks"][0]["next_run"], "2023-11-14T22:19:20.000Z", "the failed run plus its interval");
    app.clock.advance_secs(120);
    app.push("f", HEALTHY()).await;
    assert!(app.tick().await.is_empty());
    assert_eq!(canary.requests().len(), 1, "not again before its interval");
    canary.status.store(200, Ordering::SeqCst);
    app.clock.advance_secs(180);
    app.push("f", HEALTHY()).await;
    assert_eq!(app.tick().await.len(), 1, "passed on its next run: advanced");
    assert_eq!(status(&app, "f").await.1, "10%");
    let failures: Vec<_> = actions(&app, "f").await.into_iter().filter(|(a, _)| a == "check_failed").collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
}
