//! One contract per store capability ([`FlagStore`], [`MetricStore`], [`Coordination`]), each met
//! alike by memory, Redis and Redis Cluster.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rollout_controller::clock::Clock;
use rollout_controller::domain::guards::{
    Guard, GuardPoint, HealthPoint, MetricSample, MetricSeries, PulledReading, Verdict, WindowTotals, bucket_ms_for,
};
use rollout_controller::domain::plan::FlagDefinition;
use rollout_controller::domain::rollout::{Command, Flag, Status};
use rollout_controller::store::{
    Change, Coordination, FlagStore, GUARD_HISTORY_CAP, MemoryStore, MetricStore, RedisStore, Stamp, Store, Written,
};

use crate::helpers::{RedisCluster, RedisServer, T0};

/// Two clients of one store's data, as two replicas have: the in-process store is its own twin.
type Clients = (Arc<dyn Store>, Arc<dyn Store>);

fn memory() -> Clients {
    let store = Arc::new(MemoryStore::new());
    (store.clone(), store)
}

fn redis(redis: &RedisServer) -> Clients {
    let connect = || Arc::new(RedisStore::connect(&redis.url(), "rollout").expect("url"));
    (connect(), connect())
}

fn cluster(cluster: &RedisCluster) -> Clients {
    (Arc::new(cluster.store()), Arc::new(cluster.store()))
}

// The flag store: documents, conditional writes, history, the index and the catalog, the deletion
// audit, the change feed.

/// The flag store's contract, through `store`; `twin` is a second client of the same data (another
/// replica); `kind` names the store in the figures printed.
async fn flag_store_contract(store: Arc<dyn FlagStore>, twin: Arc<dyn FlagStore>, kind: &str) {
    let mut changes = store.subscribe().await.expect("subscribe");
    assert!(store.get_flag("f").await.expect("get").is_none());
    assert!(store.list_flags().await.expect("list").is_empty());
    assert!(store.history("f", 10).await.expect("history").is_empty());

    // Create: only when absent.
    let flag = Flag::new("f".into(), FlagDefinition::default(), T0);
    let created = flag.creation_event("operator:ann", "new");
    assert_eq!(store.write_flag(&flag, 0, &created).await.expect("create"), Written::Yes);
    assert_eq!(store.write_flag(&flag, 0, &created).await.expect("re-create"), Written::Conflict { found: 1 });
    assert_eq!(store.get_flag("f").await.expect("get"), Some(flag.clone()));
    let next = tokio::time::timeout(Duration::from_secs(5), changes.next()).await.expect("a change in time");
    assert_eq!(next, Some(Change { flag: "f".into(), version: 1 }));

    // Conditional writes: the expected version must match.
    let (started, event) = flag.apply(Command::Start, "operator:ann", "go", T0 + 1).expect("legal");
    assert_eq!(store.write_flag(&started, 7, &event).await.expect("stale"), Written::Conflict { found: 1 });
    assert_eq!(
        store.get_flag("f").await.expect("get").map(|f| f.state.version),
        Some(1),
        "stale write changed nothing"
    );
    assert_eq!(store.write_flag(&started, 1, &event).await.expect("cas"), Written::Yes);
    assert_eq!(store.get_flag("f").await.expect("get").map(|f| f.state.status), Some(Status::Running));
    let next = tokio::time::timeout(Duration::from_secs(5), changes.next()).await.expect("a change in time");
    assert_eq!(next, Some(Change { flag: "f".into(), version: 2 }));

    // History: newest first, limited.
    let history = store.history("f", 10).await.expect("history");
    assert_eq!(history, vec![event.clone(), created.clone()]);
    assert_eq!(store.history("f", 1).await.expect("history"), vec![event]);

    // Several flags are listed.
    let other = Flag::new("g.2".into(), FlagDefinition::default(), T0);
    store.write_flag(&other, 0, &other.creation_event("a", "b")).await.expect("create g");
    let mut names: Vec<String> = store.list_flags().await.expect("list").into_iter().map(|f| f.name).collect();
    names.sort();
    assert_eq!(names, ["f", "g.2"]);
    // A full read: every flag's stamp (version and incarnation, no document) and the store's
    // generation, the same on every read while the data is there.
    let catalog = store.load_stamps().await.expect("stamps");
    let mut stamps = catalog.stamps.clone();
    stamps.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        stamps,
        [
            Stamp { name: "f".into(), version: 2, created_at: Some(T0) },
            Stamp { name: "g.2".into(), version: 1, created_at: Some(T0) }
        ]
    );
    assert!(!catalog.generation.is_empty());
    assert_eq!(store.load_stamps().await.expect("stamps").generation, catalog.generation);
    assert_eq!(store.generation().await.expect("generation"), Some(catalog.generation.clone()));
    let mut some = store.get_flags(&["g.2".into(), "nope".into(), "f".into()]).await.expect("get several");
    some.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(some, [started.clone(), other.clone()], "existing flags only");

    // Delete removes the flag and its history, once, and only at the expected version.
    let record = started.deletion("operator:ann", "replaced by checkout-v2", T0 + 2);
    assert_eq!(store.delete_flag("f", 1, Some(&record)).await.expect("stale"), Written::Conflict { found: 2 });
    assert_eq!(store.get_flag("f").await.expect("get"), Some(started.clone()), "a stale delete changed nothing");
    assert!(store.deletions(10).await.expect("deletions").is_empty(), "nor recorded anything");
    assert_eq!(store.delete_flag("f", 2, Some(&record)).await.expect("delete"), Written::Yes);
    assert_eq!(store.delete_flag("f", 2, Some(&record)).await.expect("again"), Written::Conflict { found: 0 });
    assert!(store.get_flag("f").await.expect("get").is_none());
    assert!(store.history("f", 10).await.expect("history").is_empty());
    assert_eq!(store.list_flags().await.expect("list").len(), 1);
    // Changes arrive in order; the deletion is announced with version 0.
    let mut seen = Vec::new();
    while seen.last() != Some(&Change { flag: "f".into(), version: 0 }) {
        let next = tokio::time::timeout(Duration::from_secs(5), changes.next()).await.expect("a change in time");
        seen.push(next.expect("stream open"));
    }
    assert_eq!(seen, [Change { flag: "g.2".into(), version: 1 }, Change { flag: "f".into(), version: 0 }]);
    deletion_audit(store.as_ref(), &record).await;

    // Concurrent conditional writes from the same version: exactly one wins.
    let (a, ea) = other.apply(Command::Start, "x", "", T0).expect("legal");
    let mut attempts = Vec::new();
    for _ in 0..8 {
        let (store, a, ea) = (Arc::clone(&store), a.clone(), ea.clone());
        attempts.push(tokio::spawn(async move { store.write_flag(&a, 1, &ea).await.expect("write") }));
    }
    let mut wins = 0;
    for attempt in attempts {
        if attempt.await.expect("task") == Written::Yes {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.history("g.2", 100).await.expect("history").len(), 2);
    deletions_racing_creations(store, twin, kind).await;
}

/// Deletions are recorded, newest first, and outlive the flag's re-creation and its next deletion;
/// deleting what is not there records nothing unless told what it was.
async fn deletion_audit(store: &dyn FlagStore, first: &rollout_controller::domain::rollout::Deletion) {
    assert_eq!(store.deletions(10).await.expect("deletions"), std::slice::from_ref(first));
    assert_eq!(store.delete_flag("f", 0, None).await.expect("nothing there"), Written::Yes);
    assert_eq!(store.deletions(10).await.expect("deletions").len(), 1, "nothing deleted, nothing recorded");
    let again = Flag::new("f".into(), FlagDefinition::default(), T0 + 10);
    store.write_flag(&again, 0, &again.creation_event("operator:bob", "")).await.expect("re-create");
    let second = again.deletion("operator:bob", "", T0 + 11);
    assert_eq!(store.delete_flag("f", 1, Some(&second)).await.expect("delete"), Written::Yes);
    assert_eq!(store.deletions(10).await.expect("deletions"), [second.clone(), first.clone()]);
    assert_eq!(store.deletions(1).await.expect("deletions"), [second]);
    assert_eq!((first.version, first.last.status, first.created_at), (2, Status::Running, T0));
}

/// Each flag of `FLAGS` is deleted through `store` while three writers (through `twin` and
/// `store`) re-create it as soon as it is gone: exactly one of them does, and every flag must end
/// stored *and* listed in the index (what full reads go by), never stored unlisted.
async fn deletions_racing_creations(store: Arc<dyn FlagStore>, twin: Arc<dyn FlagStore>, kind: &str) {
    const FLAGS: usize = 100;
    let names: Vec<String> = (0..FLAGS).map(|i| format!("race-{i}")).collect();
    for name in &names {
        let flag = Flag::new(name.clone(), FlagDefinition::default(), T0);
        assert_eq!(store.write_flag(&flag, 0, &flag.creation_event("a", "")).await.expect("create"), Written::Yes);
    }
    let mut tasks = Vec::new();
    for name in &names {
        let created = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers = [&twin, &store, &twin].map(|writer| {
            let (writer, name, created) = (Arc::clone(writer), name.clone(), Arc::clone(&created));
            async move {
                let flag = Flag::new(name.clone(), FlagDefinition::default(), T0 + 1);
                let event = flag.creation_event("b", "");
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                loop {
                    if writer.write_flag(&flag, 0, &event).await.expect("create") == Written::Yes {
                        return !created.swap(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    if created.load(std::sync::atomic::Ordering::SeqCst) {
                        return false;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "{name}: never re-created");
                    tokio::task::yield_now().await;
                }
            }
        });
        let (store, name) = (Arc::clone(&store), name.clone());
        tasks.push(tokio::spawn(async move {
            let (deleted, wins) = tokio::join!(store.delete_flag(&name, 1, None), futures::future::join_all(writers));
            assert_eq!(deleted.expect("delete"), Written::Yes);
            assert_eq!(wins.iter().filter(|won| **won).count(), 1, "{name}: re-created exactly once");
        }));
    }
    for task in tasks {
        task.await.expect("race task");
    }
    let catalog = store.load_stamps().await.expect("stamps");
    let listed: std::collections::HashSet<String> =
        catalog.stamps.iter().map(|s| s.name.clone()).chain(catalog.missing).collect();
    let stored = store.get_flags(&names).await.expect("flags");
    assert_eq!(stored.len(), FLAGS, "every flag was re-created after its deletion");
    let unlisted: Vec<&str> = stored.iter().map(|f| f.name.as_str()).filter(|n| !listed.contains(*n)).collect();
    assert!(unlisted.is_empty(), "{} of {FLAGS} flags stored without an index entry: {unlisted:?}", unlisted.len());
    for flag in &stored {
        assert_eq!(flag.state.created_at, T0 + 1, "{}: the re-created incarnation", flag.name);
    }
    println!("FIGURES store {kind} deletions racing creations: {FLAGS} flags, 0 stored without an index entry");
}

#[tokio::test]
async fn memory_store_meets_the_flag_store_contract() {
    let (store, twin) = memory();
    flag_store_contract(store, twin, "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_meets_the_flag_store_contract() {
    let server = RedisServer::start();
    let (store, twin) = redis(&server);
    flag_store_contract(store, twin, "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_store_meets_the_flag_store_contract() {
    let nodes = RedisCluster::start();
    let (store, twin) = cluster(&nodes);
    flag_store_contract(store, twin, "redis-cluster").await;
}

// The metric store: pushed samples and pulled values, summed over windows of a series.

async fn metric_windows(store: &dyn MetricStore) {
    let series = MetricSeries::new("1.2".into(), bucket_ms_for(60), 60);
    let other = MetricSeries::new("1.3".into(), bucket_ms_for(60), 60);
    let sample =
        |requests, errors, p99| MetricSample { requests, errors, p99_latency_ms: p99, ..MetricSample::default() };
    store.record_metrics("m", &series, T0, &sample(100, 1, Some(10.0))).await.expect("record");
    store.record_metrics("m", &series, T0 + 10, &sample(50, 0, Some(20.0))).await.expect("record");
    store.record_metrics("m", &series, T0 + 20_000, &sample(10, 5, None)).await.expect("record");
    store.record_metrics("m", &other, T0, &sample(7, 7, None)).await.expect("record");
    store.record_metrics("n", &series, T0, &sample(9, 9, None)).await.expect("record");

    let all = store.read_window("m", &series, T0, T0 + 30_000).await.expect("window");
    assert_eq!((all.requests, all.errors), (160, 6));
    assert_eq!((all.p99_latency_ms, all.p99_latency_reports), (Some(20.0), 2));
    let late = store.read_window("m", &series, T0 + 15_000, T0 + 30_000).await.expect("window");
    assert_eq!((late.requests, late.errors, late.p99_latency_ms), (10, 5, None));
    let fresh = store.read_window("m", &other, T0, T0 + 30_000).await.expect("window");
    assert_eq!(fresh.requests, 7, "series do not mix");
    let expired = store.read_window("m", &series, T0 + 200_000, T0 + 200_000).await.expect("window");
    assert_eq!(expired, WindowTotals::default());
    // A stage entered by a replica whose clock runs ahead: the window ends before it begins.
    let backwards = store.read_window("m", &series, T0 + 30_000, T0).await.expect("window");
    assert_eq!(backwards, WindowTotals::default());
}

/// Pulled values land in the bucket of their time beside pushed samples; the window keeps each
/// guard's latest read (none when it failed) and how many there were.
async fn pulled_values(store: &dyn MetricStore) {
    let series = MetricSeries::new("2.1".into(), bucket_ms_for(60), 60);
    let pushed = MetricSample { requests: 4, queue_depth: Some(3.0), ..MetricSample::default() };
    store.record_metrics("p", &series, T0, &pushed).await.expect("record");
    store.record_pulled("p", &series, T0, Guard::ErrorRate, Some(0.5)).await.expect("pull");
    store.record_pulled("p", &series, T0 + 10, Guard::ErrorRate, Some(0.25)).await.expect("pull");
    store.record_pulled("p", &series, T0 + 20_000, Guard::P99LatencyMs, Some(1234.5)).await.expect("pull");
    store.record_pulled("p", &series, T0 + 20_010, Guard::P99LatencyMs, None).await.expect("a failed pull");

    let window = store.read_window("p", &series, T0, T0 + 30_000).await.expect("window");
    assert_eq!((window.requests, window.queue_depth, window.queue_depth_reports), (4, Some(3.0), 1));
    assert_eq!(window.pulled.get(&Guard::ErrorRate), Some(&PulledReading { latest: Some(0.25), reads: 2 }));
    assert_eq!(
        window.pulled.get(&Guard::P99LatencyMs),
        Some(&PulledReading { latest: None, reads: 2 }),
        "the latest read failed"
    );
    let early = store.read_window("p", &series, T0, T0 + 5_000).await.expect("window");
    assert_eq!(early.pulled.get(&Guard::P99LatencyMs), None, "pulled after the window");
}

/// A point of the guard history of stage entry `stage_version`, at `at`.
fn point(stage_version: u64, at: i64) -> HealthPoint {
    HealthPoint {
        at,
        stage: "canary".into(),
        stage_entered_at: T0,
        stage_version,
        guards: vec![GuardPoint {
            guard: Guard::ErrorRate,
            value: Some(0.02),
            low: Some(0.01),
            high: Some(0.035),
            threshold: Some(0.05),
            verdict: Verdict::Ok,
            samples: 1200,
            control_value: Some(0.018),
        }],
    }
}

/// The guard history: kept in order for an existing flag only, thinned (never emptied of its
/// first or newest point) past the cap, started anew by a new stage entry, deleted with the flag.
async fn guard_history(store: &dyn Store) {
    store.record_health("h", &point(2, T0)).await.expect("record for a flag that does not exist");
    assert!(store.health_history("h").await.expect("history").is_empty(), "no history without the flag");

    let flag = Flag::new("h".into(), FlagDefinition::default(), T0);
    store.write_flag(&flag, 0, &flag.creation_event("a", "b")).await.expect("create");
    for i in 0..3 {
        store.record_health("h", &point(2, T0 + i * 5_000)).await.expect("record");
    }
    let kept = store.health_history("h").await.expect("history");
    assert_eq!(kept, vec![point(2, T0), point(2, T0 + 5_000), point(2, T0 + 10_000)], "every field round-trips");

    let total = 730;
    for i in 3..total {
        store.record_health("h", &point(2, T0 + i * 5_000)).await.expect("record");
    }
    let kept = store.health_history("h").await.expect("history");
    assert!(kept.len() <= GUARD_HISTORY_CAP && kept.len() >= GUARD_HISTORY_CAP / 2, "{} points kept", kept.len());
    assert_eq!(kept.first().map(|p| p.at), Some(T0), "thinning keeps the stage's first reading");
    assert_eq!(kept.last().map(|p| p.at), Some(T0 + (total - 1) * 5_000), "and its newest");
    assert!(kept.windows(2).all(|w| w[0].at < w[1].at), "oldest first");

    store.record_health("h", &point(3, T0 + 9_000_000)).await.expect("record a new stage entry");
    assert_eq!(store.health_history("h").await.expect("history"), vec![point(3, T0 + 9_000_000)]);

    assert_eq!(store.delete_flag("h", 1, None).await.expect("delete"), Written::Yes);
    assert!(store.health_history("h").await.expect("history").is_empty(), "deleted with the flag");
    store.write_flag(&flag, 0, &flag.creation_event("a", "b")).await.expect("create again");
    assert!(store.health_history("h").await.expect("history").is_empty(), "a new flag starts with none");
}

async fn metric_store_contract(store: &dyn Store) {
    metric_windows(store).await;
    pulled_values(store).await;
    guard_history(store).await;
}

#[tokio::test]
async fn memory_store_meets_the_metric_store_contract() {
    let (store, _) = memory();
    metric_store_contract(store.as_ref()).await;
}

#[tokio::test]
async fn redis_store_meets_the_metric_store_contract() {
    let server = RedisServer::start();
    let (store, _) = redis(&server);
    metric_store_contract(store.as_ref()).await;
}

#[tokio::test]
async fn redis_cluster_store_meets_the_metric_store_contract() {
    let nodes = RedisCluster::start();
    let (store, _) = cluster(&nodes);
    metric_store_contract(store.as_ref()).await;
}

// Coordination: which store it is and whether it answers, the leader lease, de-duplication keys,
// the store's clock.

async fn coordination_contract(store: &dyn Coordination, kind: &str) {
    assert_eq!(store.kind(), kind);
    store.ping().await.expect("ping");
    leases(store).await;
    remembered_keys(store).await;
    store_clock(store).await;
    settings_and_check_runs(store).await;
}

/// A setting is shared until removed; a check's latest run replaces the one before, per flag.
async fn settings_and_check_runs(store: &dyn Coordination) {
    assert_eq!(store.setting("freeze").await.expect("read"), None);
    store.put_setting("freeze", Some(r#"{"by":"operator:ann"}"#)).await.expect("write");
    assert_eq!(store.setting("freeze").await.expect("read").as_deref(), Some(r#"{"by":"operator:ann"}"#));
    store.put_setting("freeze", None).await.expect("remove");
    assert_eq!(store.setting("freeze").await.expect("read"), None);

    assert!(store.check_runs("contract-f").await.expect("runs").is_empty());
    store.put_check_run("contract-f", "smoke", "first").await.expect("record");
    store.put_check_run("contract-f", "smoke", "second").await.expect("record");
    store.put_check_run("contract-f", "staging", "other").await.expect("record");
    store.put_check_run("contract-g", "smoke", "not f's").await.expect("record");
    let mut runs = store.check_runs("contract-f").await.expect("runs");
    runs.sort();
    assert_eq!(runs, [("smoke".to_owned(), "second".to_owned()), ("staging".to_owned(), "other".to_owned())]);
}

/// Redis answers `TIME` (the doctor compares replicas' clocks with it); memory has no clock of its own.
async fn store_clock(store: &dyn Coordination) {
    let time = store.time_ms().await.expect("time");
    match store.kind() {
        "redis" | "redis-cluster" => {
            let now = rollout_controller::clock::SystemClock.now_ms();
            let t = time.expect("Redis has a clock");
            assert!((t - now).abs() < 1000, "Redis TIME {t} is not near the system clock {now}");
            let later = store.time_ms().await.expect("time").expect("Redis has a clock");
            assert!(later >= t, "TIME does not go backwards");
        }
        _ => assert_eq!(time, None),
    }
}

async fn leases(store: &dyn Coordination) {
    let ttl = Duration::from_secs(30);
    assert_eq!(store.leader().await.expect("leader"), None);
    assert!(store.try_lead("a", ttl).await.expect("lead"));
    assert!(!store.try_lead("b", ttl).await.expect("lead"), "the lease is taken");
    assert!(store.try_lead("a", ttl).await.expect("renew"), "the holder renews");
    assert_eq!(store.leader().await.expect("leader").as_deref(), Some("a"));
    store.resign("b").await.expect("resign");
    assert_eq!(store.leader().await.expect("leader").as_deref(), Some("a"), "only the holder can resign");
    store.resign("a").await.expect("resign");
    assert!(store.try_lead("b", Duration::from_millis(200)).await.expect("lead"), "free after a resignation");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.try_lead("c", ttl).await.expect("lead"), "free after expiry");
    store.resign("c").await.expect("resign");
}

/// A key is remembered once within its TTL; forgetting it, or the TTL passing, lets it in again.
async fn remembered_keys(store: &dyn Coordination) {
    let ttl = Duration::from_secs(30);
    assert!(store.remember_once("delivery-1", ttl).await.expect("remember"), "the first time");
    assert!(!store.remember_once("delivery-1", ttl).await.expect("remember"), "seen within its TTL");
    assert!(store.remember_once("delivery-2", ttl).await.expect("remember"), "keys are separate");
    store.forget("delivery-1").await.expect("forget");
    assert!(store.remember_once("delivery-1", ttl).await.expect("remember"), "forgotten, then new again");
    assert!(store.remember_once("delivery-3", Duration::from_millis(200)).await.expect("remember"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.remember_once("delivery-3", ttl).await.expect("remember"), "new again after its TTL");
}

#[tokio::test]
async fn memory_store_meets_the_coordination_contract() {
    let (store, _) = memory();
    coordination_contract(store.as_ref(), "memory").await;
}

#[tokio::test]
async fn redis_store_meets_the_coordination_contract() {
    let server = RedisServer::start();
    let (store, _) = redis(&server);
    coordination_contract(store.as_ref(), "redis").await;
}

#[tokio::test]
async fn redis_cluster_store_meets_the_coordination_contract() {
    let nodes = RedisCluster::start();
    let (store, _) = cluster(&nodes);
    coordination_contract(store.as_ref(), "redis-cluster").await;
}

// What only the Redis stores promise: key layout, generation, cluster placement and feed, window
// reads that fetch each sealed bucket once.

#[tokio::test]
async fn redis_keys_of_one_flag_share_a_hash_tag() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "rollout").expect("url");
    let flag = Flag::new("checkout".into(), FlagDefinition::default(), T0);
    store.write_flag(&flag, 0, &flag.creation_event("a", "b")).await.expect("create");
    store.record_health("checkout", &point(1, T0)).await.expect("record a guard reading");
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis.connection()).expect("keys");
    keys.sort();
    // The index keeps the name it had before clusters were supported (on a cluster it is
    // `rollout:{catalog}:flags`), so an upgraded deployment finds its flags.
    assert_eq!(
        keys,
        ["rollout:flags", "rollout:{checkout}:flag", "rollout:{checkout}:guards", "rollout:{checkout}:history"]
    );
    let ttl: i64 = redis::cmd("TTL").arg("rollout:{checkout}:guards").query(&mut redis.connection()).expect("ttl");
    assert!((7 * 24 * 3600 - 60..=7 * 24 * 3600).contains(&ttl), "an abandoned guard history expires: {ttl}");
}

#[tokio::test]
async fn the_redis_generation_changes_exactly_when_redis_loses_its_data() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "rollout").expect("url");
    let flag = Flag::new("f".into(), FlagDefinition::default(), T0);
    store.write_flag(&flag, 0, &flag.creation_event("a", "b")).await.expect("create");
    let first = store.load_stamps().await.expect("stamps");
    assert_eq!(first.stamps.len(), 1);
    store.delete_flag("f", 1, None).await.expect("delete");
    let after_delete = store.load_stamps().await.expect("stamps");
    assert_eq!((after_delete.generation.as_str(), after_delete.stamps.len()), (first.generation.as_str(), 0));
    let _: () = redis::cmd("FLUSHALL").query(&mut redis.connection()).expect("flush");
    assert_eq!(store.generation().await.expect("generation"), None, "a flushed Redis has no generation");
    let after_flush = store.load_stamps().await.expect("stamps");
    assert_ne!(after_flush.generation, first.generation, "a flushed Redis has a new generation");
    assert_eq!(store.load_stamps().await.expect("stamps").generation, after_flush.generation);
}

#[tokio::test]
async fn a_flag_s_keys_share_a_node_of_the_cluster_and_flags_spread_over_all_nodes() {
    let cluster = RedisCluster::start();
    let store = cluster.store();
    let names: Vec<String> = (0..12).map(|i| format!("flag-{i}")).collect();
    for name in &names {
        let flag = Flag::new(name.clone(), FlagDefinition::default(), T0);
        store.write_flag(&flag, 0, &flag.creation_event("a", "b")).await.expect("create");
        let series = MetricSeries { id: "s1".into(), bucket_ms: 10_000, ttl_secs: 60 };
        let sample = MetricSample { requests: 1, ..MetricSample::default() };
        store.record_metrics(name, &series, T0, &sample).await.expect("metrics");
    }
    // The first full read sets the generation.
    let mut listed: Vec<String> = store.list_flags().await.expect("list").into_iter().map(|f| f.name).collect();
    listed.sort();
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(listed, expected);
    let mut nodes_with_flags = 0;
    let mut index_on = Vec::new();
    for node in 0..3 {
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut cluster.connection(node)).expect("keys");
        let flags: Vec<&String> = keys.iter().filter(|k| k.ends_with(":flag")).collect();
        for flag_key in &flags {
            let tag = flag_key.trim_end_matches(":flag");
            for suffix in [":history", ":m:s1:"] {
                assert!(
                    keys.iter().any(|k| k.starts_with(&format!("{tag}{suffix}"))),
                    "{tag}{suffix} on the same node"
                );
            }
        }
        if keys.iter().any(|k| k == "rollout:{catalog}:flags") {
            assert!(keys.iter().any(|k| k == "rollout:{catalog}:generation"), "index and generation share a node");
            index_on.push(node);
        }
        nodes_with_flags += usize::from(!flags.is_empty());
    }
    assert_eq!(nodes_with_flags, 3, "12 flags land on every node of 3");
    assert_eq!(index_on.len(), 1, "one node holds the index");
}

#[tokio::test]
async fn the_cluster_change_feed_moves_to_another_node_when_its_node_dies() {
    let mut cluster = RedisCluster::start();
    let store = cluster.store();
    // The first subscription goes to the first seed.
    let mut changes = store.subscribe().await.expect("subscribe");
    cluster.kill(0);
    let ended = tokio::time::timeout(Duration::from_secs(5), changes.next()).await.expect("the stream ends in time");
    assert_eq!(ended, None, "losing the node ends the stream, so the feed re-reads and subscribes again");

    // Every later subscription finds a live node, also when its turn starts at the dead one; a
    // change published on any live node reaches it.
    for version in 1..=3 {
        let mut changes = store.subscribe().await.expect("subscribe through a live node");
        let change = Change { flag: "f".into(), version };
        assert!(
            cluster.published_change_arrives(2, &mut changes, &change).await,
            "version {version} arrives on the new subscription"
        );
    }
}

/// `calls` of one command in the server's `INFO commandstats`.
fn command_calls(redis: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut redis.connection()).expect("INFO");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines().find_map(|line| line.strip_prefix(&prefix)?.split(',').next()?.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn redis_window_reads_fetch_each_sealed_bucket_once_and_add_up_as_a_fresh_read() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "rollout").expect("url");
    // A 5-minute window: 5-second buckets, 61 of them in a window read.
    let series = MetricSeries::new("1.1".into(), bucket_ms_for(300), 300);
    let sample =
        |requests, errors, p99| MetricSample { requests, errors, p99_latency_ms: p99, ..MetricSample::default() };
    for i in 0..60 {
        store
            .record_metrics("f", &series, T0 + i * 5000, &sample(10, (i % 3) as u64, Some(i as f64)))
            .await
            .expect("record");
    }
    let window = 300_000;
    let mut now = T0 + window;
    let before = command_calls(&redis, "hgetall");
    let first = store.read_window("f", &series, now - window, now).await.expect("window");
    assert_eq!(command_calls(&redis, "hgetall") - before, 61, "the first read fetches every bucket");
    assert_eq!((first.requests, first.p99_latency_ms), (600, Some(59.0)));

    // The next ticks, with pushes into the current bucket meanwhile: only the buckets that may
    // still change are fetched again, and the totals are what a store without sealed buckets reads.
    for tick in 1..=20 {
        now += 1000;
        store.record_metrics("f", &series, now, &sample(5, 5, Some(1000.0 + tick as f64))).await.expect("record");
        let before = command_calls(&redis, "hgetall");
        let cached = store.read_window("f", &series, now - window, now).await.expect("window");
        let fetched = command_calls(&redis, "hgetall") - before;
        assert!(fetched <= 4, "tick {tick}: {fetched} buckets fetched");
        let fresh = RedisStore::connect(&redis.url(), "rollout").expect("url");
        assert_eq!(cached, fresh.read_window("f", &series, now - window, now).await.expect("window"), "tick {tick}");
        assert_eq!(cached.p99_latency_ms, Some(1000.0 + tick as f64));
    }

    // A series nobody pushes to: its empty buckets are kept as such, not fetched again.
    let quiet = MetricSeries::new("1.2".into(), bucket_ms_for(300), 300);
    let before = command_calls(&redis, "hgetall");
    assert_eq!(store.read_window("f", &quiet, now - window, now).await.expect("window"), WindowTotals::default());
    assert_eq!(command_calls(&redis, "hgetall") - before, 61);
    let before = command_calls(&redis, "hgetall");
    let later = now + 5000;
    assert_eq!(store.read_window("f", &quiet, later - window, later).await.expect("window"), WindowTotals::default());
    assert!(command_calls(&redis, "hgetall") - before <= 4);

    // The clock jumps past the whole window: nothing kept applies, and the reads still agree.
    now += 3 * window;
    store.record_metrics("f", &series, now, &sample(1, 1, None)).await.expect("record");
    for _ in 0..3 {
        now += 5000;
        let cached = store.read_window("f", &series, now - window, now).await.expect("window");
        let fresh = RedisStore::connect(&redis.url(), "rollout").expect("url");
        assert_eq!(cached, fresh.read_window("f", &series, now - window, now).await.expect("window"));
        assert_eq!((cached.requests, cached.errors), (1, 1));
    }
}
