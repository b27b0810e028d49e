//! The first start: on an empty store the real binary creates the default flag (runbook plan,
//! pending, audited as `system`), once, even with replicas starting together; a store the
//! operators emptied later stays empty.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{FAST, RedisServer, ServiceProcess, eventually};

const FIRST_START: &[(&str, &str)] = &[("ROLLOUT_CREATE_DEFAULT_FLAG", "true")];

fn env() -> Vec<(&'static str, &'static str)> {
    FAST.iter().chain(FIRST_START).copied().collect()
}

/// Waits until the replica has checked for its first start (and found it was not).
async fn settled(replica: &ServiceProcess) {
    eventually(Duration::from_secs(5), "the first start check", || async {
        replica.logs().contains("not the store's first start: no default flag created")
    })
    .await;
}

#[tokio::test]
async fn two_replicas_starting_on_an_empty_redis_answer_at_once_with_one_pending_default_flag() {
    let redis = RedisServer::start();
    let env = env();
    // Launched together, ready in any order: both race to create the flag.
    let a = ServiceProcess::launch(&redis.url(), &[], &env);
    let b = ServiceProcess::launch(&redis.url(), &[], &env);
    a.wait_ready(Duration::from_secs(15)).await;
    b.wait_ready(Duration::from_secs(15)).await;

    for replica in [&a, &b] {
        eventually(Duration::from_secs(5), "the default flag answers", || async {
            replica.get("/flag/alice").await.status == 200
        })
        .await;
        let answer = replica.get("/flag/alice").await.body;
        assert_eq!((&answer["enabled"], &answer["status"]), (&json!(false), &json!("pending")), "{answer}");
    }
    let flag = a.admin_get("/flags/default").await.body;
    let stages: Vec<&str> =
        flag["definition"]["stages"].as_array().expect("stages").iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(stages, ["internal", "10%", "50%", "100%"], "the runbook's plan");
    assert_eq!(flag["version"], 1, "created once, never re-created by the other replica");
    let history = a.admin_get("/flags/default/history").await.body;
    let events = history["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{history}");
    assert_eq!((&events[0]["action"], &events[0]["actor"]), (&json!("create"), &json!("system")));
    for replica in [&a, &b] {
        let logs = replica.logs();
        assert!(
            !logs.contains("ERROR rollout_controller") && !logs.contains("WARN rollout_controller::server"),
            "{logs}"
        );
    }

    // The operators delete it: a later start does not bring it back.
    assert_eq!(a.admin_delete("/flags/default").await.status, 204);
    drop(b);
    let c = ServiceProcess::spawn(&redis.url(), &[], &env).await;
    settled(&c).await;
    assert_eq!(c.get("/flag/alice").await.status, 404, "{}", c.logs());
    assert_eq!(c.admin_get("/flags").await.body["flags"], json!([]));
}

#[tokio::test]
async fn a_store_with_flags_gets_no_default_flag_and_the_option_turns_it_off() {
    let redis = RedisServer::start();
    let env = env();
    let off: Vec<(&str, &str)> = FAST.iter().copied().chain([("ROLLOUT_CREATE_DEFAULT_FLAG", "false")]).collect();
    let quiet = ServiceProcess::spawn(&redis.url(), &[], &off).await;
    assert_eq!(quiet.admin_put("/flags/checkout", json!({})).await.status, 201);
    drop(quiet);
    let a = ServiceProcess::spawn(&redis.url(), &["--default-flag", "checkout"], &env).await;
    let answer = a.get("/flag/alice").await.body;
    assert_eq!(answer["flag"], "checkout", "{answer}");
    let b = ServiceProcess::spawn(&redis.url(), &[], &env).await;
    settled(&b).await;
    let flags = b.admin_get("/flags").await.body;
    assert_eq!(flags["flags"].as_array().map(Vec::len), Some(1), "no default flag beside checkout: {flags}");
}

#[tokio::test]
async fn a_config_flag_with_reconcile_is_applied_at_every_start_and_one_without_only_created() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("rollout.toml");
    std::fs::write(
        &config,
        "[flags.declared]\nreconcile = true\nsalt = \"from-config\"\nwindow_secs = \"10m\"\n\
         [flags.seeded]\nsalt = \"from-config\"\n",
    )
    .expect("write");
    let config = config.to_str().expect("utf-8");
    let first = ServiceProcess::spawn(&redis.url(), &["--config", config], FAST).await;
    eventually(Duration::from_secs(5), "the config flags", || async {
        first.admin_get("/flags/seeded").await.status == 200 && first.admin_get("/flags/declared").await.status == 200
    })
    .await;
    assert_eq!(first.flag("declared").await["definition"]["window_secs"], 600);
    // Operators change both through the API; the next start puts back only the reconciled one.
    for flag in ["declared", "seeded"] {
        assert_eq!(first.admin_put(&format!("/flags/{flag}"), json!({"salt": "by-hand"})).await.status, 200);
    }
    drop(first);
    let second = ServiceProcess::spawn(&redis.url(), &["--config", config], FAST).await;
    eventually(Duration::from_secs(5), "the reconciliation", || async {
        second.flag("declared").await["version"] == 3
    })
    .await;
    let declared = second.flag("declared").await;
    assert_eq!(declared["definition"]["salt"], "from-config");
    let history = second.admin_get("/flags/declared/history").await.body;
    assert_eq!((&history["events"][0]["action"], &history["events"][0]["actor"]), (&json!("update"), &json!("config")));
    assert_eq!(second.flag("seeded").await["definition"]["salt"], "by-hand", "created only when absent");
    // A third start finds it as declared: no write. (Its first start check comes after the
    // config file's flags: once it is logged, they are settled.)
    drop(second);
    let third = ServiceProcess::spawn(&redis.url(), &["--config", config], &env()).await;
    settled(&third).await;
    assert!(!third.logs().contains("reconciled with the config file"), "{}", third.logs());
    assert_eq!(third.flag("declared").await["version"], 3);
}
