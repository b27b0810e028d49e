//! The post-launch review report: a rollout driven through the runbook by the controller (manual
//! clock), then read back as JSON and Markdown.

use serde_json::{Value, json};

use crate::helpers::{ADMIN, RedisServer, TestApp};

const HEALTHY: fn() -> Value = || json!({"requests": 1000, "errors": 2});

/// Lets `secs` pass, pushes healthy traffic and ticks: the controller must advance the flag.
async fn soak_and_advance(app: &TestApp, flag: &str, secs: i64) {
    app.clock.advance_secs(secs);
    assert_eq!(app.push(flag, HEALTHY()).await.status, 200);
    let outcomes = app.tick().await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
}

async fn report(app: &TestApp, flag: &str) -> Value {
    let r = app.admin_get(&format!("/flags/{flag}/report")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

async fn markdown(app: &TestApp, flag: &str) -> (String, String) {
    let resp = app
        .http
        .get(app.url(&format!("/flags/{flag}/report?format=md")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("report");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().expect("ascii").to_owned();
    (content_type, resp.text().await.expect("text"))
}

/// `(stage, percent, duration_secs, outcome, entered by, left by)` of every stage visit.
fn visits(report: &Value) -> Vec<(String, u64, u64, String, String, String)> {
    report["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|v| {
            (
                v["stage"].as_str().expect("stage").to_owned(),
                v["percent"].as_u64().expect("percent"),
                v["duration_secs"].as_u64().expect("duration"),
                v["outcome"].as_str().expect("outcome").to_owned(),
                v["entered_by"]["actor"].as_str().expect("actor").to_owned(),
                v["left_by"]["actor"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

fn visit(
    stage: &str,
    percent: u64,
    secs: u64,
    outcome: &str,
    by: &str,
    left: &str,
) -> (String, u64, u64, String, String, String) {
    (stage.into(), percent, secs, outcome.into(), by.into(), left.into())
}

const BREACH: &str = "error_rate 0.02 > 0.01 over 500 requests";

#[tokio::test]
async fn the_report_rebuilds_the_runbook_timeline_with_a_breach_a_resume_and_the_completion() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    app.create_flag("checkout", json!({"internal_users": ["ann@corp"], "decision": "threshold"})).await;
    app.must("checkout", "start").await;
    soak_and_advance(&app, "checkout", 3600).await; // internal → 10%
    soak_and_advance(&app, "checkout", 3600).await; // 10% → 50%
    app.clock.advance_secs(1200);
    assert_eq!(app.push("checkout", json!({"requests": 500, "errors": 10})).await.body["action"], "rollback");
    app.clock.advance_secs(600);
    app.admin_post("/flags/checkout/resume", json!({"reason": "fixed the N+1 query"})).await;
    soak_and_advance(&app, "checkout", 3600).await; // 10% → 50%
    soak_and_advance(&app, "checkout", 3600).await; // 50% → 100%
    soak_and_advance(&app, "checkout", 22 * 3600).await; // 100% → completed

    let r = report(&app, "checkout").await;
    assert_eq!(
        visits(&r),
        [
            visit("internal", 0, 3600, "advanced", "operator:ann", "controller"),
            visit("10%", 10, 3600, "advanced", "controller", "controller"),
            visit("50%", 50, 1200, "rolled_back", "controller", "controller"),
            visit("10%", 10, 3600, "advanced", "operator:ann", "controller"),
            visit("50%", 50, 3600, "advanced", "controller", "controller"),
            visit("100%", 100, 22 * 3600, "completed", "controller", "controller"),
        ]
    );
    // Past stages keep the guard values the controller recorded when it moved them on.
    assert_eq!(
        r["stages"][0]["left_by"]["reason"],
        "soak of 1h passed, healthy: error_rate 0.002 <= 0.01 over 1000 requests"
    );
    assert_eq!(r["stages"][2]["left_by"]["reason"], BREACH);
    assert_eq!(r["stages"][3]["entered_by"]["reason"], "fixed the N+1 query");
    assert_eq!(r["stages"][0]["entered_at"], "2023-11-14T22:13:20.000Z");
    assert_eq!(r["stages"][5]["duration"], "22h 0m");

    assert_eq!(
        r["rollbacks"],
        json!([{"at": "2023-11-15T00:33:20.000Z", "action": "rollback", "stage": "50%", "percent": 50,
                "actor": "controller", "trigger": "guard", "reason": BREACH}])
    );
    assert_eq!(r["breaches"], r["rollbacks"]);
    assert_eq!(
        (r["status"].as_str(), r["stage"].as_str(), r["percent"].as_u64()),
        (Some("completed"), Some("100%"), Some(100))
    );
    // 1 + 1 + 20 min + 10 min + 1 + 1 + 22 hours.
    let total = 2 * 3600 + 1800 + 24 * 3600;
    assert_eq!((r["total_duration_secs"].as_i64(), r["total_duration"].as_str()), (Some(total), Some("1d 2h")));
    assert_eq!(
        (r["started_at"].as_str(), r["ended_at"].as_str()),
        (Some("2023-11-14T22:13:20.000Z"), Some("2023-11-16T00:43:20.000Z"))
    );
    assert_eq!(r["current_guards"], Value::Null, "a completed rollout has no stage being guarded");
    assert!(
        r["guards_note"]
            .as_str()
            .is_some_and(|n| n.starts_with("guard readings are available for the current stage only"))
    );
    let events = r["events"].as_array().expect("events");
    let actions: Vec<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
    // The leader posted the review when 24 h had passed since the start (during the 22 h soak).
    assert_eq!(
        actions,
        [
            "create",
            "start",
            "advance",
            "advance",
            "rollback",
            "resume",
            "advance",
            "advance",
            "review_posted",
            "advance"
        ],
        "create, start, 5 advances, rollback, resume, the review posted at T+24h"
    );
    assert_eq!(events[9]["to"]["status"].as_str(), Some("completed"));
    assert_eq!(r["history_truncated"], false);

    let (content_type, md) = markdown(&app, "checkout").await;
    assert_eq!(content_type, "text/markdown; charset=utf-8");
    assert!(md.starts_with("# Post-launch review: checkout\n"), "{md}");
    assert!(md.contains("| Total duration | 1d 2h |"), "{md}");
    assert!(
        md.contains(
            "| # | Stage | Percent | Entered | Left | Duration | Outcome | Entered by | Left by | Why |\n|---:|"
        ),
        "{md}"
    );
    assert!(
        md.contains("| 3 | 50% | 50% | 2023-11-15T00:13:20.000Z | 2023-11-15T00:33:20.000Z | 20m 0s | rolled_back | controller | controller | error_rate 0.02 > 0.01 over 500 requests |"),
        "{md}"
    );
    assert!(md.contains("| 2023-11-15T00:33:20.000Z | rollback | 50% (50%) | controller | guard | error_rate 0.02 > 0.01 over 500 requests |"), "{md}");
    assert!(md.contains("Guard readings are available for the current stage only"), "{md}");
    assert!(
        md.contains(
            "| 2023-11-15T00:43:20.000Z | resume | rolled_back (0%) → 10% (10%) | operator:ann | fixed the N+1 query |"
        ),
        "{md}"
    );
}

#[tokio::test]
async fn a_live_rollouts_report_shows_the_current_stages_guard_readings() {
    let app = TestApp::in_memory().spawn().await;
    app.create_flag("f", json!({"decision": "threshold"})).await;
    app.must("f", "start").await;
    app.must("f", "advance").await;
    app.clock.advance_secs(600);
    app.push("f", HEALTHY()).await;
    // An operator's reason may hold anything; the Markdown table must survive it.
    app.admin_post("/flags/f/pause", json!({"reason": "watching | waiting\nfor the dashboard"})).await;

    let r = report(&app, "f").await;
    assert_eq!(r["ended_at"], Value::Null);
    assert_eq!(r["total_duration_secs"], 600);
    let guards = &r["current_guards"];
    assert_eq!((guards["stage"].as_str(), guards["verdict"].as_str()), (Some("10%"), Some("ok")));
    let error_rate = guards["guards"].as_array().expect("guards").iter().find(|g| g["guard"] == "error_rate").cloned();
    assert_eq!(
        error_rate,
        Some(json!({"guard": "error_rate", "value": 0.002, "interval": null, "threshold": 0.01, "samples": 1000,
                   "min_samples": 100, "confidence": 0.95, "test": "point_estimate", "verdict": "ok", "source": "push"}))
    );
    assert_eq!(visits(&r)[1], visit("10%", 10, 600, "paused", "operator:ann", "operator:ann"));

    let (_, md) = markdown(&app, "f").await;
    assert!(md.contains("| Ended | not yet (in progress) |"), "{md}");
    assert!(md.contains("Current stage 10% (paused): verdict **ok**"), "{md}");
    assert!(md.contains("| error_rate | 0.002 | > 0.01 | 1000 of 100 | ok |"), "{md}");
    assert!(md.contains("| watching \\| waiting for the dashboard |"), "{md}");
}

#[tokio::test]
async fn report_errors_come_in_the_api_format() {
    let app = TestApp::in_memory().spawn().await;
    app.create_flag("f", json!({})).await;
    let pending = report(&app, "f").await;
    assert_eq!(
        (pending["stages"].as_array().map(Vec::len), pending["total_duration_secs"].clone()),
        (Some(0), Value::Null)
    );
    for (path, status, code) in [
        ("/flags/nope/report", 404, "flag_not_found"),
        ("/flags/f/report?format=pdf", 400, "invalid_query"),
        ("/flags/f/report?colour=red", 400, "invalid_query"),
        ("/flags/bad%20name/report", 400, "invalid_flag_name"),
    ] {
        let r = app.admin_get(path).await;
        assert_eq!((r.status, r.body["error"].as_str()), (status, Some(code)), "{path}: {}", r.body);
    }
    let r = app.get("/flags/f/report").await;
    assert_eq!((r.status, r.body["error"].as_str()), (401, Some("unauthorized")));
}
