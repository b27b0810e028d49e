//! Several replicas on one Redis: shared state, the change feed, fail-static.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{RedisServer, eventually, spawn_app};

#[tokio::test]
async fn state_survives_a_restart_of_the_service() {
    let redis = RedisServer::start();
    let app = spawn_app(Some(redis.url())).await;
    app.create_flag("f", json!({})).await;
    app.must("f", "start").await;
    app.must("f", "advance").await;
    app.stop().await;

    let again = spawn_app(Some(redis.url())).await;
    let f = again.admin_get("/flags/f").await.body;
    assert_eq!(
        (f["status"].as_str(), f["stage"].as_str(), f["version"].as_u64()),
        (Some("running"), Some("10%"), Some(3))
    );
    assert_eq!(again.admin_get("/flags/f/history").await.body["events"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn a_rollback_through_one_replica_is_answered_by_the_other_within_100ms() {
    let redis = RedisServer::start();
    let a = spawn_app(Some(redis.url())).await;
    let b = spawn_app(Some(redis.url())).await;
    a.create_flag("f", json!({"stages": [{"name": "all", "percent": 100}]})).await;
    a.must("f", "start").await;
    eventually(Duration::from_secs(2), || async { b.percent("f").await == 100 }).await;

    for _ in 0..5 {
        a.must("f", "rollback").await;
        let took = eventually(Duration::from_millis(100), || async { b.percent("f").await == 0 }).await;
        assert!(took <= Duration::from_millis(100), "took {took:?}");
        a.must("f", "resume").await;
        eventually(Duration::from_millis(100), || async { b.percent("f").await == 100 }).await;
    }
}

#[tokio::test]
async fn replicas_keep_answering_while_redis_is_down_and_recover_by_themselves() {
    let mut redis = RedisServer::start();
    let a = spawn_app(Some(redis.url())).await;
    let b = spawn_app(Some(redis.url())).await;
    a.create_flag("f", json!({"stages": [{"name": "ten", "percent": 10}, {"name": "all", "percent": 100}]})).await;
    a.must("f", "start").await;
    eventually(Duration::from_secs(2), || async { b.percent("f").await == 10 }).await;

    redis.stop();
    for app in [&a, &b] {
        eventually(Duration::from_secs(5), || async { app.get("/readyz").await.status == 503 }).await;
        let ready = app.get("/readyz").await;
        assert_eq!(ready.body["status"], "degraded");
        assert!(ready.body["reason"].as_str().is_some_and(|r| !r.is_empty()));
        for i in 0..50 {
            let r = app.get(&format!("/flags/f/users/user-{i}")).await;
            assert_eq!((r.status, r.body["percent"].as_u64()), (200, Some(10)), "fail-static evaluation");
        }
        let refused = app.command("f", "advance").await;
        assert_eq!((refused.status, refused.body["error"].as_str()), (503, Some("store_unavailable")));
    }

    // Redis comes back (empty: it keeps nothing). Both replicas recover without a restart.
    redis.restart();
    for app in [&a, &b] {
        eventually(Duration::from_secs(5), || async { app.get("/readyz").await.status == 200 }).await;
    }
    a.create_flag("g", json!({"stages": [{"name": "all", "percent": 100}]})).await;
    a.must("g", "start").await;
    eventually(Duration::from_secs(2), || async {
        let r = b.get("/flags/g/users/u").await;
        r.status == 200 && r.body["percent"] == 100
    })
    .await;
}

#[tokio::test]
async fn a_flushed_redis_is_noticed_at_the_next_resync_and_the_leader_writes_every_flag_back_where_it_was() {
    let redis = RedisServer::start();
    let a = spawn_app(Some(redis.url())).await;
    let b = spawn_app(Some(redis.url())).await;
    let plan = json!({"advance_without_data": true,
                      "stages": [{"name": "ten", "percent": 10, "soak_secs": 60}, {"name": "all", "percent": 100}]});
    a.create_flag("f", plan).await;
    a.must("f", "start").await;
    a.clock.advance_secs(30);
    let before = a.admin_get("/flags/f").await.body;
    eventually(Duration::from_secs(2), || async { b.evaluate("f", "u").await["version"] == 2 }).await;

    let _: () = redis::cmd("FLUSHALL").query(&mut redis.connection()).expect("flush");
    // Both replicas re-read everything within a resync (1 s here) and keep serving the flag.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for app in [&a, &b] {
        assert_eq!(app.percent("f").await, 10);
        assert_eq!(app.admin_get("/flags/f").await.status, 200);
    }
    // The leader's next tick writes it back as it was, version + 1, with an audit event.
    assert!(a.tick().await.is_empty(), "nothing advanced: the soak is not over");
    let restored = a.admin_get("/flags/f").await.body;
    assert_eq!(restored["version"], 3);
    for key in ["status", "stage", "percent", "stage_entered_at", "created_at", "definition"] {
        assert_eq!(restored[key], before[key], "{key}");
    }
    let history = a.admin_get("/flags/f/history").await.body;
    assert_eq!(history["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(history["events"][0]["action"], "restored");
    assert_eq!(history["events"][0]["actor"], "controller");
    eventually(Duration::from_secs(2), || async { b.evaluate("f", "u").await["version"] == 3 }).await;
    // The soak goes on from the stored stage start: 30 s more and the leader advances.
    a.clock.advance_secs(30);
    let outcomes = a.tick().await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(a.percent("f").await, 100);
}
