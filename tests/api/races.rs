//! Races between two replicas on one Redis (or one Redis Cluster): commands sent at the same
//! instant, 150 to 300 trials each.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rollout_controller::store::{FlagStore, RedisStore};
use serde_json::json;

use crate::helpers::{ADMIN, RedisCluster, RedisServer, Spawn, TestApp, eventually};

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
    let a = TestApp::on(&redis).spawn().await;
    let b = TestApp::on(&redis).spawn().await;
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
            eventually(Duration::from_secs(1), "the replica answers 0% at the last version", || async {
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
    let a = TestApp::on(&redis).spawn().await;
    let b = TestApp::on(&redis).spawn().await;
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

/// The Redis the replicas share, one node or a cluster: for starting the replicas, for reading
/// what it holds as the service's own store reads it, and for changing it behind their back.
enum Shared<'a> {
    One(&'a RedisServer),
    Cluster(&'a RedisCluster),
}

impl Shared<'_> {
    fn app(&self) -> Spawn {
        match self {
            Shared::One(redis) => TestApp::on(redis),
            Shared::Cluster(cluster) => TestApp::on_cluster(cluster),
        }
    }

    fn store(&self) -> RedisStore {
        match self {
            Shared::One(redis) => RedisStore::connect(&redis.url(), "rollout").expect("url"),
            Shared::Cluster(cluster) => cluster.store(),
        }
    }

    /// Removes a flag's document and index entry without announcing it: replicas drop the flag at
    /// their next full read of the store, and only then.
    async fn remove_unannounced(&self, flag: &str) {
        let (doc, index) = match self {
            Shared::One(_) => (format!("rollout:{{{flag}}}:flag"), "rollout:flags"),
            Shared::Cluster(_) => (format!("rollout:{{{flag}}}:flag"), "rollout:{catalog}:flags"),
        };
        match self {
            Shared::One(redis) => {
                let mut conn = redis.connection();
                let _: () = redis::pipe().del(&doc).srem(index, flag).query(&mut conn).expect("remove");
            }
            Shared::Cluster(cluster) => {
                let client = redis::cluster::ClusterClient::new(cluster.urls()).expect("cluster URLs");
                let mut conn = client.get_async_connection().await.expect("cluster connection");
                let _: i64 = redis::cmd("DEL").arg(&doc).query_async(&mut conn).await.expect("DEL");
                let _: i64 = redis::cmd("SREM").arg(index).arg(flag).query_async(&mut conn).await.expect("SREM");
            }
        }
    }
}

/// Waits until both replicas have done a full read of the store that began after this call: a
/// flag removed behind their back is gone from both.
async fn after_a_full_read(shared: &Shared<'_>, replicas: [&TestApp; 2], round: usize) {
    let sentinel = format!("sentinel-{round}");
    replicas[0].create_flag(&sentinel, json!({})).await;
    for app in replicas {
        eventually(Duration::from_secs(5), "the sentinel reaches the replica", || async {
            app.try_evaluate(&sentinel, "u").await.is_some()
        })
        .await;
    }
    shared.remove_unannounced(&sentinel).await;
    for app in replicas {
        eventually(Duration::from_secs(10), "a full read drops the sentinel", || async {
            app.try_evaluate(&sentinel, "u").await.is_none()
        })
        .await;
    }
}

/// Which of `flags` the store holds a document of, and which its index lists.
async fn stored_and_listed(store: &RedisStore, flags: &[String]) -> (HashSet<String>, HashSet<String>) {
    let documents = store.get_flags(flags).await.expect("documents").into_iter().map(|f| f.name).collect();
    let catalog = store.load_stamps().await.expect("index");
    let listed = catalog.stamps.into_iter().map(|s| s.name).chain(catalog.missing).collect();
    (documents, listed)
}

/// The flags the store holds without listing them: what every full read drops.
async fn unlisted(store: &RedisStore, flags: &[String]) -> Vec<String> {
    let (documents, listed) = stored_and_listed(store, flags).await;
    let mut unlisted: Vec<String> = documents.difference(&listed).cloned().collect();
    unlisted.sort();
    unlisted
}

/// Flags whose end disagrees with the answers (a `PUT` answered 201 came after the deletion and
/// must have left the flag; one answered 200 came before it), or that a replica serves otherwise
/// than the store holds them after a full read.
async fn ended_wrongly(store: &RedisStore, replicas: [&TestApp; 2], put_created: &[(String, bool)]) -> Vec<String> {
    let flags: Vec<String> = put_created.iter().map(|(flag, _)| flag.clone()).collect();
    let (documents, _) = stored_and_listed(store, &flags).await;
    let mut wrong = Vec::new();
    for (flag, created) in put_created {
        let mut right = documents.contains(flag) == *created;
        for app in replicas {
            right &= (app.admin_get(&format!("/flags/{flag}")).await.status == 200) == *created;
        }
        if !right {
            wrong.push(flag.clone());
        }
    }
    wrong
}

/// How many names, and the first few.
fn few(names: &[String]) -> String {
    format!("{} {:?}", names.len(), &names[..names.len().min(8)])
}

/// `DELETE` of existing flags through `a` while `PUT {}` of the same flags goes through `b`,
/// `parallel` flags at a time, `rounds` times. Every answer must be one a user may get, and each
/// flag must end deleted everywhere or present everywhere, its document listed in the index;
/// a later `PUT` and `start` of every flag must then hold on both replicas.
async fn delete_while_put(shared: Shared<'_>, rounds: usize, parallel: usize) -> String {
    let store = shared.store();
    let a = shared.app().spawn().await;
    let b = shared.app().spawn().await;
    let started = Instant::now();
    let mut flags = Vec::new();
    let mut put_created = Vec::new();
    for round in 0..rounds {
        let batch: Vec<String> = (0..parallel).map(|i| format!("race-{round}-{i}")).collect();
        join_all(batch.iter().map(|f| a.create_flag(f, json!({})))).await;
        let (a, b) = (&a, &b);
        let answers = join_all(batch.iter().map(|f| async move {
            let path = format!("/flags/{f}");
            tokio::join!(a.admin_delete(&path), b.admin_put(&path, json!({})))
        }))
        .await;
        for (flag, (deleted, put)) in batch.iter().zip(answers) {
            assert_eq!(deleted.status, 204, "{flag}: the flag existed: {}", deleted.body);
            assert!(matches!(put.status, 200 | 201), "{flag}: PUT answered {}: {}", put.status, put.body);
            put_created.push((flag.clone(), put.status == 201));
        }
        flags.extend(batch);
    }
    let trials = flags.len();
    let created = put_created.iter().filter(|(_, created)| *created).count();
    let vanished = unlisted(&store, &flags).await;
    after_a_full_read(&shared, [&a, &b], 1).await;
    let wrong = ended_wrongly(&store, [&a, &b], &put_created).await;

    // Whatever the race left, a later PUT and start through either replica hold on both.
    for flag in &flags {
        let saved = b.admin_put(&format!("/flags/{flag}"), json!({})).await;
        assert!(matches!(saved.status, 200 | 201), "{flag}: {}", saved.body);
        a.must(flag, "start").await;
    }
    let still_unlisted = unlisted(&store, &flags).await;
    after_a_full_read(&shared, [&a, &b], 2).await;
    let mut forgotten = Vec::new();
    for flag in &flags {
        for app in [&a, &b] {
            if app.try_evaluate(flag, "u").await.is_none() {
                forgotten.push(flag.clone());
                break;
            }
        }
    }
    assert!(
        vanished.is_empty() && wrong.is_empty() && still_unlisted.is_empty() && forgotten.is_empty(),
        "of {trials} flags: {} held without an index entry; {} ended otherwise than the answers say or served \
         otherwise than stored after a full read; after a later PUT and start, {} unlisted and {} forgotten",
        few(&vanished),
        few(&wrong),
        few(&still_unlisted),
        few(&forgotten)
    );
    format!(
        "{trials} trials ({parallel} at a time) in {} ms: PUT created {created}, updated {}; 0 held without an \
         index entry, 0 ended or served wrongly after a full read, 0 forgotten after a later PUT and start",
        started.elapsed().as_millis(),
        trials - created
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_and_a_put_of_one_flag_at_once_leave_it_deleted_or_present_on_both_replicas() {
    let redis = RedisServer::start();
    let one_at_a_time = delete_while_put(Shared::One(&redis), 150, 1).await;
    let _: () = redis::cmd("FLUSHALL").query(&mut redis.connection()).expect("flush");
    let many_at_once = delete_while_put(Shared::One(&redis), 15, 20).await;
    println!("FIGURES race delete+put, one Redis: {one_at_a_time}; {many_at_once}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_and_a_put_of_one_flag_at_once_leave_it_deleted_or_present_on_both_replicas_of_a_cluster() {
    let cluster = RedisCluster::start();
    let many_at_once = delete_while_put(Shared::Cluster(&cluster), 15, 20).await;
    println!("FIGURES race delete+put, Redis Cluster: {many_at_once}");
}
