//! One leader among the replicas; a dead one is replaced within a lease; concurrent steppers never
//! skip or double a stage.

use std::time::{Duration, Instant};

use rollout_controller::clock::ManualClock;
use serde_json::json;

use crate::helpers::{RedisServer, T0, TestApp, eventually};

#[tokio::test]
async fn exactly_one_replica_leads_and_a_killed_leader_is_replaced_within_one_lease() {
    let redis = RedisServer::start();
    let lease = Duration::from_millis(1000);
    let tick = Duration::from_millis(100);
    let fast = || {
        TestApp::on(&redis).settings(|s| {
            s.controller_tick = tick;
            s.lease = lease;
        })
    };
    let a = fast().spawn().await;
    let b = fast().spawn().await;
    eventually(Duration::from_secs(5), "a leader", || async { a.is_leader() || b.is_leader() }).await;
    // Over several ticks, never two leaders at once.
    for _ in 0..10 {
        assert!(!(a.is_leader() && b.is_leader()), "two leaders at once");
        tokio::time::sleep(tick).await;
    }
    let (leader, follower) = if a.is_leader() { (a, b) } else { (b, a) };
    assert!(!follower.is_leader());

    let killed = Instant::now();
    leader.kill();
    eventually(Duration::from_secs(5), "the follower takes over", || async { follower.is_leader() }).await;
    let took = killed.elapsed();
    assert!(took <= lease + 3 * tick, "took over after {took:?}, lease is {lease:?}");
}

#[tokio::test]
async fn two_replicas_stepping_at_the_same_instant_advance_a_flag_exactly_once_100_times() {
    let redis = RedisServer::start();
    let clock = ManualClock::new(T0);
    let a = TestApp::on(&redis).clock(clock.clone()).spawn().await;
    let b = TestApp::on(&redis).clock(clock.clone()).spawn().await;
    let plan = json!({"stages": [
        {"name": "one", "percent": 10, "soak_secs": 60},
        {"name": "two", "percent": 20, "soak_secs": 60},
        {"name": "three", "percent": 30, "soak_secs": 60}
    ]});
    a.create_flag("race", plan).await;
    a.must("race", "start").await;
    for trial in 0..100 {
        let before = a.admin_get("/flags/race").await.body;
        let (version, index) =
            (before["version"].as_u64().expect("version"), before["stage_index"].as_u64().expect("index"));
        // Both replicas must see the same state before they race.
        eventually(Duration::from_secs(2), "B sees the flag's version", || async {
            b.try_evaluate("race", "u").await.is_some_and(|a| a["version"] == version)
        })
        .await;
        clock.advance_secs(60);
        a.push("race", json!({"requests": 1000})).await;
        let (ra, rb) = tokio::join!(a.step(), b.step());
        assert_eq!(ra.len() + rb.len(), 1, "trial {trial}: {ra:?} {rb:?}");
        // When B won, its write reaches A's snapshot through the change feed.
        eventually(Duration::from_secs(2), "A sees the advance", || async {
            a.admin_get("/flags/race").await.body["version"].as_u64() != Some(version)
        })
        .await;
        let after = a.admin_get("/flags/race").await.body;
        assert_eq!(after["version"].as_u64(), Some(version + 1), "trial {trial}");
        let expected = if index == 2 { ("completed", 2) } else { ("running", index + 1) };
        assert_eq!(
            (after["status"].as_str().expect("status"), after["stage_index"].as_u64().expect("index")),
            expected,
            "trial {trial}"
        );
        if index == 2 {
            // Start the plan over for the next trial.
            a.must("race", "rollback").await;
            a.must("race", "resume").await;
        }
    }
    let history = a.admin_get("/flags/race/history?limit=10000").await.body;
    let advances = history["events"].as_array().expect("events").iter().filter(|e| e["action"] == "advance").count();
    assert_eq!(advances, 100);
}
