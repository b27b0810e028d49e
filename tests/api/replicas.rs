//! Several replicas on one Redis: shared state, the change feed, fail-static.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{RedisCluster, RedisServer, TestApp, eventually};

#[tokio::test]
async fn state_survives_a_restart_of_the_service() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    app.create_flag("f", json!({})).await;
    app.must("f", "start").await;
    app.must("f", "advance").await;
    app.stop().await;

    let again = TestApp::on(&redis).spawn().await;
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
    let a = TestApp::on(&redis).spawn().await;
    let b = TestApp::on(&redis).spawn().await;
    a.create_flag("f", json!({"stages": [{"name": "all", "percent": 100}]})).await;
    a.must("f", "start").await;
    eventually(Duration::from_secs(2), "B answers 100%", || async { b.try_percent("f").await == Some(100) }).await;

    for _ in 0..5 {
        a.must("f", "rollback").await;
        let took =
            eventually(Duration::from_millis(100), "B answers the rollback", || async { b.percent("f").await == 0 })
                .await;
        assert!(took <= Duration::from_millis(100), "took {took:?}");
        a.must("f", "resume").await;
        eventually(Duration::from_millis(100), "B answers the resume", || async { b.percent("f").await == 100 }).await;
    }
}

#[tokio::test]
async fn replicas_keep_answering_while_redis_is_down_and_recover_by_themselves() {
    let mut redis = RedisServer::start();
    let a = TestApp::on(&redis).spawn().await;
    let b = TestApp::on(&redis).spawn().await;
    a.create_flag("f", json!({"stages": [{"name": "ten", "percent": 10}, {"name": "all", "percent": 100}]})).await;
    a.must("f", "start").await;
    eventually(Duration::from_secs(2), "B answers 10%", || async { b.try_percent("f").await == Some(10) }).await;

    redis.stop();
    for app in [&a, &b] {
        eventually(Duration::from_secs(5), "/readyz 503", || async { app.get("/readyz").await.status == 503 }).await;
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
        eventually(Duration::from_secs(5), "/readyz 200", || async { app.get("/readyz").await.status == 200 }).await;
    }
    a.create_flag("g", json!({"stages": [{"name": "all", "percent": 100}]})).await;
    a.must("g", "start").await;
    eventually(Duration::from_secs(2), "B answers the new flag", || async {
        let r = b.get("/flags/g/users/u").await;
        r.status == 200 && r.body["percent"] == 100
    })
    .await;
}

#[tokio::test]
async fn a_flushed_redis_is_noticed_at_the_next_resync_and_the_leader_writes_every_flag_back_where_it_was() {
    let redis = RedisServer::start();
    let a = TestApp::on(&redis).spawn().await;
    let b = TestApp::on(&redis).spawn().await;
    let plan = json!({"advance_without_data": true,
                      "stages": [{"name": "ten", "percent": 10, "soak_secs": 60}, {"name": "all", "percent": 100}]});
    a.create_flag("f", plan).await;
    a.must("f", "start").await;
    a.clock.advance_secs(30);
    let before = a.admin_get("/flags/f").await.body;
    eventually(Duration::from_secs(2), "B at version 2", || async { b.evaluate("f", "u").await["version"] == 2 }).await;

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
    eventually(Duration::from_secs(2), "B at version 3", || async { b.evaluate("f", "u").await["version"] == 3 }).await;
    // The soak goes on from the stored stage start: 30 s more and the leader advances.
    a.clock.advance_secs(30);
    let outcomes = a.tick().await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(a.percent("f").await, 100);
}

#[tokio::test]
async fn two_replicas_on_a_redis_cluster_share_flags_and_changes() {
    let cluster = RedisCluster::start();
    let a = TestApp::on_cluster(&cluster).spawn().await;
    let b = TestApp::on_cluster(&cluster).spawn().await;
    assert_eq!(b.get("/readyz").await.body["store"], "redis-cluster");
    // Enough flags that their keys land on every node.
    let flags: Vec<String> = (0..6).map(|i| format!("flag-{i}")).collect();
    for f in &flags {
        a.create_flag(f, json!({"stages": [{"name": "all", "percent": 100}]})).await;
        a.must(f, "start").await;
    }
    for f in &flags {
        eventually(Duration::from_secs(5), "B answers 100%", || async { b.try_percent(f).await == Some(100) }).await;
    }
    a.must("flag-3", "rollback").await;
    eventually(Duration::from_secs(5), "B answers the rollback", || async { b.percent("flag-3").await == 0 }).await;
    assert_eq!(b.admin_get("/flags").await.body["flags"].as_array().map(Vec::len), Some(6));
    assert_eq!(b.admin_get("/flags/flag-3/history").await.body["events"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn a_cluster_node_that_comes_back_empty_loses_no_flag_and_the_leader_writes_its_flags_back() {
    let mut cluster = RedisCluster::start();
    let a = TestApp::on_cluster(&cluster).spawn().await;
    let b = TestApp::on_cluster(&cluster).spawn().await;
    assert!(a.is_leader());
    let flags: Vec<String> = (0..12).map(|i| format!("flag-{i}")).collect();
    for f in &flags {
        a.create_flag(f, json!({"stages": [{"name": "half", "percent": 50}]})).await;
        a.must(f, "start").await;
    }
    for f in &flags {
        eventually(Duration::from_secs(5), "B sees the flag started", || async {
            b.try_evaluate(f, "u").await.is_some_and(|a| a["version"] == 2)
        })
        .await;
    }
    // A node holding flags but not the index: when it comes back empty, the generation (beside the
    // index) does not change, yet its flags are gone.
    let node = (0..3)
        .find(|&n| {
            let keys = keys_on(&cluster, n);
            !keys.iter().any(|k| k.starts_with("rollout:{catalog}")) && keys.iter().any(|k| k.ends_with(":flag"))
        })
        .expect("12 flags over 3 nodes: a node with flags and without the index");
    let mut lost: Vec<String> = keys_on(&cluster, node)
        .iter()
        .filter_map(|k| k.strip_prefix("rollout:{")?.strip_suffix("}:flag").map(str::to_owned))
        .collect();
    lost.sort();
    assert!(!lost.is_empty());
    cluster.restart_empty(node);
    assert!(keys_on(&cluster, node).is_empty(), "the node came back without data");

    // Two resyncs (1 s each) later, both replicas still serve every flag as before.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for app in [&a, &b] {
        for f in &flags {
            assert_eq!(app.percent(f).await, 50, "{f}");
        }
    }
    // The leader's next tick writes the lost flags back, as they were, with an audit event.
    eventually(Duration::from_secs(10), "the leader writes the lost flags back", || async {
        a.tick().await;
        let mut back = true;
        for f in &lost {
            back &= a.admin_get(&format!("/flags/{f}/history")).await.body["events"][0]["action"] == "restored";
        }
        back
    })
    .await;
    for f in &lost {
        eventually(Duration::from_secs(5), "B at version 3", || async { b.evaluate(f, "u").await["version"] == 3 })
            .await;
        assert_eq!(b.percent(f).await, 50);
    }
    let mut on_node: Vec<String> = keys_on(&cluster, node)
        .iter()
        .filter_map(|k| k.strip_prefix("rollout:{")?.strip_suffix("}:flag").map(str::to_owned))
        .collect();
    on_node.sort();
    assert_eq!(on_node, lost, "written back to the node that lost them");
}

fn keys_on(cluster: &RedisCluster, node: usize) -> Vec<String> {
    redis::cmd("KEYS").arg("*").query(&mut cluster.connection(node)).expect("keys")
}
