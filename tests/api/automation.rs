//! Automatic stepping and rollback: metric windows, guard thresholds, the controller (manual clock).

use rollout_controller::clock::ManualClock;
use serde_json::{Value, json};

use crate::helpers::{ADMIN, RedisServer, T0, TestApp, eventually};

async fn history(app: &TestApp, flag: &str) -> Vec<Value> {
    app.admin_get(&format!("/flags/{flag}/history?limit=1000")).await.body["events"]
        .as_array()
        .cloned()
        .expect("events")
}

async fn state(app: &TestApp, flag: &str) -> (String, String, u64) {
    let f = app.admin_get(&format!("/flags/{flag}")).await.body;
    (
        f["status"].as_str().expect("status").to_owned(),
        f["stage"].as_str().expect("stage").to_owned(),
        f["percent"].as_u64().expect("percent"),
    )
}

fn s(status: &str, stage: &str, percent: u64) -> (String, String, u64) {
    (status.to_owned(), stage.to_owned(), percent)
}

/// Starts `flag` on the runbook plan and moves it to the stage at `index` by operator advances.
async fn running_at(app: &TestApp, flag: &str, definition: Value, index: usize) {
    app.create_flag(flag, definition).await;
    app.must(flag, "start").await;
    for _ in 0..index {
        app.must(flag, "advance").await;
    }
}

const HEALTHY: fn() -> Value = || json!({"requests": 1000, "errors": 2});

#[tokio::test]
async fn the_whole_runbook_plan_runs_by_itself_while_healthy() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    app.create_flag("checkout", json!({"internal_users": ["ann@corp"]})).await;
    app.must("checkout", "start").await;

    let plan = [("internal", 0, 3600), ("10%", 10, 3600), ("50%", 50, 3600), ("100%", 100, 22 * 3600)];
    for (i, (stage, percent, soak)) in plan.iter().enumerate() {
        assert_eq!(state(&app, "checkout").await, s("running", stage, *percent));
        // One second short of the soak (apps push all along): the controller holds.
        app.clock.advance_secs(soak - 1);
        assert_eq!(app.push("checkout", HEALTHY()).await.status, 200);
        assert!(app.tick().await.is_empty(), "{stage}: advanced before its soak was over");
        assert_eq!(state(&app, "checkout").await, s("running", stage, *percent));
        app.clock.advance_secs(1);
        let outcomes = app.tick().await;
        assert_eq!(outcomes.len(), 1, "{stage}: {outcomes:?}");
        let next = plan.get(i + 1).map_or(s("completed", "100%", 100), |(n, p, _)| s("running", n, *p));
        assert_eq!(state(&app, "checkout").await, next);
    }
    // 1 + 1 + 1 + 22 hours: the post-launch review at T+24h... 25h since start includes no extra wait.
    let events = history(&app, "checkout").await;
    let advances: Vec<&Value> = events.iter().filter(|e| e["action"] == "advance").collect();
    assert_eq!(advances.len(), 4);
    for e in &advances {
        assert_eq!(e["actor"], "controller");
        let reason = e["reason"].as_str().expect("reason");
        // The interval of 2 errors in 1000 requests lies below the threshold: evidence of health.
        assert!(
            reason.starts_with("soak of ")
                && reason.contains("passed, healthy: error_rate 0.002 [")
                && reason.ends_with("] <= 0.01 at 95% over 1000 requests"),
            "{reason}"
        );
    }
    assert_eq!(advances[0]["reason"].as_str().map(|r| r.starts_with("soak of 22h")), Some(true));
    assert!(app.tick().await.is_empty(), "a completed flag stays completed");
}

#[tokio::test]
async fn an_error_rate_breach_at_ten_percent_rolls_back_at_once_on_the_push() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    running_at(&app, "f", json!({"internal_users": ["ann"]}), 1).await;
    assert_eq!(state(&app, "f").await, s("running", "10%", 10));

    let reply = app.push("f", json!({"requests": 500, "errors": 25})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["action"], "rollback");
    // No controller tick has run: the push itself rolled the flag back.
    assert_eq!(state(&app, "f").await, s("rolled_back", "10%", 0));
    for user in ["ann", "user-1", "user-2", "prod-audit-test"] {
        assert_eq!(app.evaluate("f", user).await["enabled"], false, "{user} must be off after a rollback");
    }
    let last = &history(&app, "f").await[0];
    assert_eq!(last["action"], "rollback");
    assert_eq!(last["actor"], "controller");
    let reason = last["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("error_rate 0.05 [") && reason.ends_with("] > 0.01 at 95% over 500 requests"),
        "{reason}"
    );

    // Resume restarts at 10% with a fresh window: the bad data of the failed stage does not count.
    let resumed = app.must("f", "resume").await;
    assert_eq!((resumed["stage"].as_str(), resumed["percent"].as_u64()), (Some("10%"), Some(10)));
    let health = app.admin_get("/flags/f/health").await.body;
    assert_eq!(health["verdict"], "insufficient_data");
    assert!(app.tick().await.is_empty());
}

#[tokio::test]
async fn bounce_complaint_and_delivery_breaches_at_fifty_percent_roll_back() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    let cases = [
        (json!({"sent": 200, "delivered": 190, "bounced": 12}), "bounce_rate 0.06 > 0.05 over 200 sent"),
        (
            json!({"sent": 2000, "delivered": 2000, "complaints": 3}),
            "complaint_rate 0.0015 > 0.001 over 2000 delivered",
        ),
        (json!({"sent": 200, "delivered": 180}), "delivery_rate 0.9 < 0.95 over 200 sent"),
        (json!({"webhooks": 100, "webhook_errors": 6}), "webhook_error_rate 0.06 > 0.05 over 100 webhooks"),
        (json!({"p99_latency_ms": 5200.5}), "p99_latency_ms 5200.5 > 5000 over 1 reports"),
        (json!({"queue_depth": 20000}), "queue_depth 20000 > 10000 over 1 reports"),
    ];
    // The runbook's literal rule (a point estimate, one gauge report): `decision: threshold`.
    for (i, (sample, reason)) in cases.into_iter().enumerate() {
        let flag = format!("email-{i}");
        running_at(&app, &flag, json!({"decision": "threshold"}), 2).await;
        assert_eq!(state(&app, &flag).await, s("running", "50%", 50));
        let reply = app.push(&flag, sample).await;
        assert_eq!(reply.body["action"], "rollback", "{reason}");
        assert_eq!(state(&app, &flag).await, s("rolled_back", "50%", 0));
        assert_eq!(history(&app, &flag).await[0]["reason"], reason);
    }
}

#[tokio::test]
async fn too_few_samples_hold_the_stage_without_rolling_back() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    running_at(&app, "f", json!({}), 1).await;
    app.clock.advance_secs(7200);
    let reply = app.push("f", json!({"requests": 99, "errors": 50})).await;
    assert_eq!(reply.body["action"], Value::Null);
    assert!(app.tick().await.is_empty(), "missing data neither rolls back nor advances");
    assert_eq!(state(&app, "f").await, s("running", "10%", 10));
    let health = app.admin_get("/flags/f/health").await.body;
    assert_eq!(health["verdict"], "insufficient_data");
    let error_rate = health["guards"]
        .as_array()
        .expect("guards")
        .iter()
        .find(|g| g["guard"] == "error_rate")
        .cloned()
        .expect("error_rate");
    assert_eq!(
        error_rate,
        json!({"guard": "error_rate", "value": 0.5050505050505051, "interval": null, "threshold": 0.01, "samples": 99,
               "min_samples": 100, "confidence": 0.95, "test": "beta_binomial_sequence", "verdict": "insufficient_data",
               "breaches_when": "above", "source": "push", "summary": "error_rate 0.5051 <= 0.01 over 99 requests"})
    );

    // One more request reaches the minimum: now it is judged, and it breaches.
    let reply = app.push("f", json!({"requests": 1})).await;
    assert_eq!(reply.body["action"], "rollback");
}

#[tokio::test]
async fn advance_without_data_advances_after_the_soak() {
    let app = TestApp::in_memory().spawn().await;
    running_at(&app, "quiet", json!({"advance_without_data": true}), 1).await;
    running_at(&app, "strict", json!({}), 1).await;
    app.clock.advance_secs(3600);
    let outcomes = app.tick().await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].flag, "quiet");
    assert_eq!(state(&app, "quiet").await, s("running", "50%", 50));
    assert_eq!(state(&app, "strict").await, s("running", "10%", 10));
}

#[tokio::test]
async fn a_paused_flag_still_rolls_back_on_a_breach() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    running_at(&app, "f", json!({}), 2).await;
    app.must("f", "pause").await;
    app.clock.advance_secs(7200);
    app.push("f", HEALTHY()).await;
    assert!(app.tick().await.is_empty(), "paused never advances");
    let reply = app.push("f", json!({"requests": 1000, "errors": 100})).await;
    assert_eq!(reply.body["action"], "rollback");
    assert_eq!(state(&app, "f").await, s("rolled_back", "50%", 0));
}

#[tokio::test]
async fn on_breach_pause_freezes_instead_and_pushes_inside_the_judge_gap_are_judged_at_its_end() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).settings(|s| s.push_judge_gap = std::time::Duration::from_millis(300)).spawn().await;
    running_at(&app, "f", json!({"on_breach": "pause", "thresholds": {"error_rate": 0.05}, "min_samples": 10}), 1)
        .await;
    let reply = app.push("f", json!({"requests": 100, "errors": 5})).await;
    assert_eq!(reply.body["action"], Value::Null, "0.05 is not above the flag's 0.05 threshold");
    // Within the push-check gap, the next push is judged a moment later, not inline.
    app.push("f", json!({"requests": 0, "errors": 10})).await;
    eventually(std::time::Duration::from_secs(2), "the deferred judgement pauses the flag", || async {
        state(&app, "f").await.0 == "paused"
    })
    .await;
    assert_eq!(state(&app, "f").await, s("paused", "10%", 10), "paused holds the percentage");
    let last = &history(&app, "f").await[0];
    assert_eq!((last["action"].as_str(), last["actor"].as_str()), (Some("pause"), Some("controller")));
    assert!(app.tick().await.is_empty(), "already paused: nothing more to do");
}

#[tokio::test]
async fn a_judgement_deferred_by_the_push_gap_is_dropped_at_shutdown_not_run_after_it() {
    let redis = RedisServer::start();
    let gap = std::time::Duration::from_millis(300);
    let app = TestApp::on(&redis).settings(|s| s.push_judge_gap = gap).spawn().await;
    running_at(&app, "f", json!({"on_breach": "pause", "thresholds": {"error_rate": 0.05}, "min_samples": 10}), 1)
        .await;
    app.push("f", json!({"requests": 100, "errors": 5})).await;
    // A breach inside the gap: its judgement is deferred to the gap's end, and the app stops first.
    app.push("f", json!({"requests": 0, "errors": 10})).await;
    app.stop().await;
    // Proving that nothing happens takes waiting past the moment it would have: the gap, twice.
    tokio::time::sleep(gap * 2).await;
    // A replica whose clock is past the window (it sees no data, so its own tick changes nothing)
    // reads the flag as the stopped app left it.
    let later = ManualClock::new(T0 + 600_000);
    let reader = TestApp::on(&redis).settings(|s| s.push_judge_gap = gap).clock(later).spawn().await;
    assert_eq!(state(&reader, "f").await, s("running", "10%", 10), "a judgement ran after its app stopped");
    let last = &history(&reader, "f").await[0];
    assert_eq!(last["action"], "advance", "{last}");
}

#[tokio::test]
async fn per_stage_thresholds_override_the_flag_and_null_turns_a_guard_off() {
    let app = TestApp::in_memory().spawn().await;
    let definition = json!({
        "thresholds": {"queue_depth": null},
        "stages": [
            {"name": "canary", "percent": 5, "soak_secs": 60, "thresholds": {"error_rate": 0.2}},
            {"name": "all", "percent": 100, "soak_secs": 60}
        ]
    });
    running_at(&app, "f", definition, 0).await;
    let reply = app.push("f", json!({"requests": 1000, "errors": 150, "queue_depth": 1e9})).await;
    assert_eq!(reply.body["action"], Value::Null, "15% errors is within the canary's 20%; queue depth is off");
    app.clock.advance_secs(60);
    assert_eq!(app.tick().await.len(), 1);
    assert_eq!(state(&app, "f").await, s("running", "all", 100));
    let reply = app.push("f", json!({"requests": 1000, "errors": 150})).await;
    assert_eq!(reply.body["action"], "rollback", "the default 1% applies in the next stage");
}

#[tokio::test]
async fn the_window_only_counts_recent_data() {
    let app = TestApp::in_memory().spawn().await;
    running_at(&app, "f", json!({"window_secs": 60, "min_samples": 10}), 1).await;
    app.push("f", json!({"requests": 100, "errors": 1})).await;
    app.clock.advance_secs(30);
    app.push("f", json!({"requests": 100})).await;
    let health = app.admin_get("/flags/f/health").await.body;
    assert_eq!(health["guards"][0]["samples"], 200);
    app.clock.advance_secs(50);
    let health = app.admin_get("/flags/f/health").await.body;
    assert_eq!(health["guards"][0]["samples"], 100, "the first push slid out of the 60 s window");
    app.clock.advance_secs(3600);
    let health = app.admin_get("/flags/f/health").await.body;
    assert_eq!(health["verdict"], "insufficient_data");
}

#[tokio::test]
async fn metric_pushes_are_validated_and_authorised() {
    let app = TestApp::in_memory()
        .settings(|s| {
            s.metrics_tokens = vec![rollout_controller::config::NamedToken {
                name: "app".into(),
                secret: "metrics-token-1".to_owned().into(),
            }];
            s.read_tokens = vec![rollout_controller::config::NamedToken {
                name: "reader".into(),
                secret: "read-token-1".to_owned().into(),
            }];
        })
        .spawn()
        .await;
    running_at(&app, "f", json!({}), 1).await;
    let push = |token: &str, body: &str| {
        app.http
            .post(app.url("/flags/f/metrics"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
    };
    let cases = [
        (push("metrics-token-1", r#"{"requests": 10}"#), 200, None),
        (push(ADMIN, r#"{"requests": 10}"#), 200, None),
        (push("read-token-1", r#"{"requests": 10}"#), 403, Some("forbidden")),
        (push("nope-nope-nope", r#"{"requests": 10}"#), 401, Some("unauthorized")),
        (push("metrics-token-1", r#"{"requests": -1}"#), 422, Some("invalid_body")),
        (push("metrics-token-1", r#"{"requests": 1.5}"#), 422, Some("invalid_body")),
        (push("metrics-token-1", r#"{"requests": 1e30}"#), 422, Some("invalid_body")),
        (push("metrics-token-1", r#"{"requests": 18446744073709551616}"#), 422, Some("invalid_body")),
        (push("metrics-token-1", r#"{"requests": 2000000000}"#), 422, Some("invalid_body")),
        (push("metrics-token-1", r#"{"p99_latency_ms": -3}"#), 422, Some("invalid_body")),
        (push("metrics-token-1", r#"{"p99_latency_ms": NaN}"#), 400, Some("malformed_json")),
        (push("metrics-token-1", r#"{"queue_depth": 1e300}"#), 422, Some("invalid_body")),
        (push("metrics-token-1", r#"{"colour": 1}"#), 422, Some("invalid_body")),
        (push("metrics-token-1", r#"{}"#), 422, Some("invalid_body")),
        (push("metrics-token-1", r#"{"requests""#), 400, Some("malformed_json")),
    ];
    for (req, status, code) in cases {
        let r = app.send(req).await;
        assert_eq!(r.status, status, "{}", r.body);
        if let Some(code) = code {
            assert_eq!(r.body["error"], code);
        }
    }
    let unknown =
        app.send(app.http.post(app.url("/flags/nope/metrics")).bearer_auth(ADMIN).json(&json!({"requests": 1}))).await;
    assert_eq!((unknown.status, unknown.body["error"].as_str()), (404, Some("flag_not_found")));
    let health = app.send(app.http.get(app.url("/flags/f/health")).bearer_auth("read-token-1")).await;
    assert_eq!(health.body["guards"][0]["samples"], 20, "only the two accepted pushes were counted");
}

/// A window edit on a running flag, on both stores: the data the stage gathered stays counted.
async fn widening_the_window_keeps_the_stage_s_data(app: &TestApp) {
    for flag in ["unchanged", "widened"] {
        running_at(app, flag, json!({}), 1).await;
        let reply = app.push(flag, json!({"requests": 90, "errors": 9})).await;
        assert_eq!(reply.body["action"], Value::Null, "{flag}: 90 requests are fewer than min_samples");
    }
    // The same definition (every field default) with a longer window.
    let saved = app.admin_put("/flags/widened", json!({"window_secs": 600})).await;
    assert_eq!((saved.status, saved.body["definition"]["window_secs"].as_u64()), (200, Some(600)), "{}", saved.body);
    let health = app.admin_get("/flags/widened/health").await.body;
    assert_eq!(health["guards"][0]["samples"], 90, "the edit neither drops nor resets the stage's data");
    for flag in ["unchanged", "widened"] {
        let reply = app.push(flag, json!({"requests": 100})).await;
        assert_eq!(reply.body["action"], "rollback", "{flag}: 9 errors in 190 requests breach 1%");
        assert_eq!(state(app, flag).await, s("rolled_back", "10%", 0), "{flag}");
        assert_eq!(
            history(app, flag).await[0]["reason"],
            "error_rate 0.0474 [0.0107, 0.124] > 0.01 at 95% over 190 requests"
        );
    }
}

#[tokio::test]
async fn changing_window_secs_on_a_running_flag_keeps_its_guard_data_like_an_unchanged_twin() {
    let redis = RedisServer::start();
    widening_the_window_keeps_the_stage_s_data(&TestApp::on(&redis).spawn().await).await;
    widening_the_window_keeps_the_stage_s_data(&TestApp::in_memory().spawn().await).await;
}
