//! Races between two replicas on one Redis: commands sent at the same instant, 200 trials each.

use std::time::Instant;

use serde_json::json;

use crate::helpers::{ADMIN, RedisServer, TestApp, eventually, spawn_app};

/// The flag as Redis holds it (not a replica's snapshot, which may lag by a change message).
fn stored(redis: &RedisServer) -> serde_json::Value {
    let doc: String =
        redis::cmd("HGET").arg("rollout:{race}:flag").arg("doc").query(&mut redis.connection()).expect("stored flag");
    serde_json::from_str(&doc).expect("flag JSON")
}

async fn post(app: &TestApp, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = app.send(app.http.post(app.url(path)).bearer_auth(ADMIN).json(&body)).await;
    (r.status, r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advance_and_rollback_at_the_same_instant_on_two_replicas_end_rolled_back_200_times_in_200() {
    let redis = RedisServer::start();
    let a = spawn_app(Some(redis.url())).await;
    let b = spawn_app(Some(redis.url())).await;
    a.create_flag("race", json!({})).await;
    a.must("race", "start").await;
    a.must("race", "rollback").await;
    let started = Instant::now();
    let (mut advance_won, mut advance_refused) = (0, 0);
    for trial in 0..200 {
        a.must("race", "resume").await;
        // Alternate which replica gets which command.
        let (adv, rb) = if trial % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (advanced, rolled) = tokio::join!(
            post(adv, "/flags/race/advance", json!({})),
            post(rb, "/flags/race/rollback", json!({"reason": "race"}))
        );
        assert_eq!(rolled.0, 200, "trial {trial}: the rollback must land: {}", rolled.1);
        match advanced.0 {
            200 => advance_won += 1,
            409 => advance_refused += 1,
            other => panic!("trial {trial}: advance answered {other}: {}", advanced.1),
        }
        let flag = stored(&redis);
        assert_eq!(flag["state"]["status"], "rolled_back", "trial {trial}");
        let version = flag["state"]["version"].clone();
        // Both replicas answer 0% once the change feed delivered the last write.
        for app in [&a, &b] {
            eventually(std::time::Duration::from_secs(1), || async {
                let e = app.evaluate("race", "u").await;
                e["version"] == version && e["percent"] == 0
            })
            .await;
        }
    }
    println!(
        "FIGURES race advance+rollback: 200 trials in {} ms, every one ended rolled_back (advance landed first {advance_won} times, \
         refused 409 {advance_refused} times)",
        started.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_advances_with_the_same_expected_version_on_two_replicas_exactly_one_wins_200_times_in_200() {
    let redis = RedisServer::start();
    let a = spawn_app(Some(redis.url())).await;
    let b = spawn_app(Some(redis.url())).await;
    a.create_flag("race", json!({})).await;
    a.must("race", "start").await;
    let started = Instant::now();
    let mut conflicts = 0;
    for trial in 0..200 {
        a.must("race", "rollback").await;
        let version = a.must("race", "resume").await["version"].as_u64().expect("version");
        let body = json!({"expected_version": version});
        let (first, second) =
            tokio::join!(post(&a, "/flags/race/advance", body.clone()), post(&b, "/flags/race/advance", body.clone()));
        let mut statuses = [first.0, second.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "trial {trial}: {} / {}", first.1, second.1);
        let loser = if first.0 == 409 { &first.1 } else { &second.1 };
        assert_eq!(loser["error"], "version_conflict", "trial {trial}");
        conflicts += 1;
        let flag = stored(&redis);
        assert_eq!(flag["state"]["version"].as_u64(), Some(version + 1), "trial {trial}");
        assert_eq!(flag["state"]["stage_index"], 2, "trial {trial}: advanced once, from 10% to 50%");
    }
    let history = a.admin_get("/flags/race/history?limit=10000").await.body;
    let advances = history["events"].as_array().expect("events").iter().filter(|e| e["action"] == "advance").count();
    assert_eq!(advances, 200, "one advance per trial");
    println!(
        "FIGURES race two advances: 200 trials in {} ms, exactly one 200 and one 409 version_conflict each ({conflicts} conflicts), 200 advances in the audit",
        started.elapsed().as_millis()
    );
}
