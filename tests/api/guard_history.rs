//! The guard history: the leader's readings of a running flag's guards over its current stage,
//! which `GET /flags/{flag}/health/history` serves (the dashboard's chart of the stage).

use serde_json::{Value, json};

use rollout_controller::clock::rfc3339;

use crate::helpers::{RedisServer, T0, TestApp};

async fn running_at_ten_percent(app: &TestApp, flag: &str, definition: Value) {
    app.create_flag(flag, definition).await;
    app.must(flag, "start").await;
    app.must(flag, "advance").await;
}

async fn readings(app: &TestApp, flag: &str) -> (Value, Vec<Value>) {
    let reply = app.admin_get(&format!("/flags/{flag}/health/history")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let readings = reply.body["readings"].as_array().cloned().unwrap_or_default();
    (reply.body, readings)
}

fn error_rate(reading: &Value) -> &Value {
    reading["guards"].as_array().and_then(|g| g.iter().find(|g| g["guard"] == "error_rate")).expect("error_rate")
}

/// The guard-history keys of `flag` in this Redis.
fn history_keys(redis: &RedisServer, flag: &str) -> Vec<String> {
    redis::cmd("KEYS").arg(format!("*{{{flag}}}:guards")).query(&mut redis.connection()).expect("keys")
}

#[tokio::test]
async fn the_history_covers_the_stage_with_value_interval_and_threshold_then_starts_anew_and_goes_with_the_flag() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    // A 5-minute window: one reading per 10 s at most.
    running_at_ten_percent(&app, "f", json!({})).await;
    let entered = app.admin_get("/flags/f").await.body;
    // 50 minutes of the 1-hour soak, a tick every 5 s, traffic at 0.5% errors.
    for _ in 0..600 {
        app.push("f", json!({"requests": 200, "errors": 1})).await;
        assert!(app.tick().await.is_empty(), "healthy and soaking: holds");
        app.clock.advance_secs(5);
    }
    let (body, got) = readings(&app, "f").await;
    assert_eq!((body["flag"].as_str(), body["stage"].as_str()), (Some("f"), Some("10%")), "{body}");
    assert_eq!(got.len(), 300, "one reading per 10 s of the 50 minutes");
    assert_eq!(
        (body["stage_entered_at"].as_str(), entered["stage_entered_at"].as_str()),
        (Some(&*rfc3339(T0)), Some(&*rfc3339(T0)))
    );
    assert_eq!(got[0]["at"], rfc3339(T0), "the first reading is the stage's first tick");
    let last = got.last().expect("readings");
    assert_eq!(last["at"], rfc3339(T0 + 2_990_000), "the newest is the last tick");
    assert!(got.windows(2).all(|w| w[0]["at"].as_str() < w[1]["at"].as_str()), "oldest first");
    let newest = error_rate(last);
    assert_eq!(newest["threshold"].as_f64(), Some(0.01));
    assert_eq!(newest["verdict"], "ok", "{newest}");
    let (value, low, high) = (newest["value"].as_f64(), newest["low"].as_f64(), newest["high"].as_f64());
    assert!(value.is_some_and(|v| (v - 0.005).abs() < 1e-9), "{newest}");
    assert!(low.zip(value).zip(high).is_some_and(|((l, v), h)| l < v && v < h && h < 0.01), "{newest}");
    assert!(
        newest["samples"].as_u64().is_some_and(|n| (60 * 200..=61 * 200).contains(&n)),
        "a 5-minute window: {newest}"
    );
    assert_eq!(newest["control_value"], Value::Null, "no control cohort reported");

    // The soak ends: the tick that advances starts the next stage's history.
    app.clock.advance_secs(600);
    app.push("f", json!({"requests": 20000, "errors": 100})).await;
    assert_eq!(app.tick().await.len(), 1, "advanced");
    let (body, got) = readings(&app, "f").await;
    assert_eq!((body["stage"].as_str(), got.len()), (Some("50%"), 0), "the old stage's readings are not this one's");
    app.tick().await;
    let (_, got) = readings(&app, "f").await;
    assert_eq!(got.len(), 1, "a new stage entry starts a new history");

    assert_eq!(history_keys(&redis, "f").len(), 1);
    assert_eq!(app.admin_delete("/flags/f").await.status, 204);
    assert!(history_keys(&redis, "f").is_empty(), "deleting the flag deletes its guard history");
    let gone = app.admin_get("/flags/f/health/history").await;
    assert_eq!((gone.status, gone.body["error"].as_str()), (404, Some("flag_not_found")), "{}", gone.body);
}

#[tokio::test]
async fn the_history_holds_at_most_720_readings_and_still_begins_at_the_stage_start() {
    let app = TestApp::in_memory().spawn().await;
    // A 10-second window: one reading per 5 s; no traffic, so the flag holds all along.
    let stages = json!([{"name": "canary", "percent": 10, "soak_secs": 86400}, {"name": "all", "percent": 100}]);
    app.create_flag("f", json!({"window_secs": 10, "stages": stages})).await;
    app.must("f", "start").await;
    for _ in 0..800 {
        app.tick().await;
        app.clock.advance_secs(5);
    }
    let (body, got) = readings(&app, "f").await;
    assert!(got.len() <= 720 && got.len() >= 360, "{} readings kept", got.len());
    assert_eq!(body["stage_entered_at"], rfc3339(T0));
    assert_eq!(got[0]["at"], rfc3339(T0), "thinned, still from the stage's start");
    assert_eq!(got.last().map(|r| &r["at"]), Some(&json!(rfc3339(T0 + 799 * 5_000))));
    assert_eq!(error_rate(&got[0])["value"], Value::Null, "no data yet");
    assert_eq!(error_rate(&got[0])["verdict"], "insufficient_data");
}

#[tokio::test]
async fn the_history_carries_the_control_cohort_when_both_report() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    let definition = json!({"thresholds": {"error_rate": null}, "compare": {"error_rate": {"max_increase": 0.005}}});
    running_at_ten_percent(&app, "f", definition).await;
    app.push("f", json!({"requests": 40000, "errors": 400})).await;
    app.push("f", json!({"requests": 360000, "errors": 3600, "cohort": "control"})).await;
    app.tick().await;
    let (_, got) = readings(&app, "f").await;
    assert_eq!(got.len(), 1);
    let reading = error_rate(&got[0]);
    assert_eq!((reading["value"].as_f64(), reading["control_value"].as_f64()), (Some(0.01), Some(0.01)), "{reading}");
    assert_eq!(reading["threshold"], Value::Null, "judged against control only");
}

#[tokio::test]
async fn the_history_needs_a_token_like_the_health_and_answers_404_for_an_unknown_flag() {
    let app = TestApp::in_memory().spawn().await;
    running_at_ten_percent(&app, "f", json!({})).await;
    assert_eq!(app.get("/flags/f/health/history").await.status, 401);
    let unknown = app.admin_get("/flags/nope/health/history").await;
    assert_eq!((unknown.status, unknown.body["error"].as_str()), (404, Some("flag_not_found")), "{}", unknown.body);
}
