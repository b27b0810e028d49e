//! Fault injection on real processes: the `rollout` binary and `redis-server`, killed and restarted
//! under load. Each test prints its figures (`cargo test --test api faults -- --nocapture`); the
//! README's Reliability table records them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::helpers::{FAST, RedisOptions, RedisServer, ServiceProcess, eventually, timed_test};

/// What the in-test load client saw.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    not_200: AtomicU64,
    /// Answers whose percentage differed from the expected one.
    wrong: AtomicU64,
    max_latency_us: AtomicU64,
    stop: AtomicBool,
}

impl Load {
    fn total(&self) -> u64 {
        self.ok.load(Ordering::SeqCst) + self.failed.load(Ordering::SeqCst) + self.not_200.load(Ordering::SeqCst)
    }
}

/// One keep-alive HTTP/1.1 connection of the load client: a request written by hand, the answer's
/// status and body read back. Cheap on purpose, so that the CPU goes to the replicas under test.
struct LoadConnection {
    addr: std::net::SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl LoadConnection {
    /// `(status, body)`, or an error when the connection failed (then the next call reconnects).
    async fn get(&mut self, path: &str) -> std::io::Result<(u16, String)> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => self.stream.insert(BufReader::new(TcpStream::connect(self.addr).await?)),
        };
        let request = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", self.addr);
        let answer = async {
            stream.get_mut().write_all(request.as_bytes()).await?;
            let mut line = String::new();
            stream.read_line(&mut line).await?;
            let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let mut length = 0;
            loop {
                line.clear();
                if stream.read_line(&mut line).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                if line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            stream.read_exact(&mut body).await?;
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        let result = tokio::time::timeout(Duration::from_secs(5), answer)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
        if result.is_err() {
            self.stream = None;
        }
        result
    }
}

/// `workers` loops evaluating `flag` for ever new users on the replicas in turn, each answer
/// checked for status 200 and `"percent":<percent>`, until `load.stop`.
fn start_load(
    replicas: &[&ServiceProcess],
    flag: &str,
    percent: u64,
    workers: usize,
    load: &Arc<Load>,
) -> tokio::task::JoinSet<()> {
    let expected = format!("\"percent\":{percent},");
    let mut set = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let (load, expected) = (Arc::clone(load), expected.clone());
        let mut connection = LoadConnection { addr: replicas[worker % replicas.len()].addr, stream: None };
        let base = format!("/flags/{flag}/users/");
        set.spawn(async move {
            let mut n = 0u64;
            while !load.stop.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                match connection.get(&format!("{base}user-{worker}-{n}")).await {
                    Ok((200, body)) => {
                        load.ok.fetch_add(1, Ordering::Relaxed);
                        if !body.contains(&expected) {
                            load.wrong.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {
                        load.not_200.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        load.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                load.max_latency_us.fetch_max(us, Ordering::Relaxed);
            }
        });
    }
    set
}

fn events(history: &Value) -> Vec<Value> {
    let mut events = history["events"].as_array().expect("events").clone();
    events.reverse();
    events
}

fn actions(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["action"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_under_load_loses_no_evaluation_refuses_changes_and_recovers_by_itself() {
    let _timed = timed_test().await;
    let mut redis = RedisServer::start_with(RedisOptions { persistent: true, ..RedisOptions::default() });
    let a = ServiceProcess::spawn(&redis.url(), &[], FAST).await;
    let b = ServiceProcess::spawn(&redis.url(), &[], FAST).await;
    let plan = json!({"stages": [{"name": "10%", "percent": 10}, {"name": "50%", "percent": 50},
                                 {"name": "100%", "percent": 100}]});
    assert_eq!(a.admin_put("/flags/f", plan).await.status, 201);
    assert_eq!(a.admin_post("/flags/f/start", json!({})).await.status, 200);
    assert_eq!(b.admin_post("/flags/f/advance", json!({"reason": "before the outage"})).await.status, 200);
    eventually(Duration::from_secs(2), "both replicas at 50%", || async {
        a.flag("f").await["percent"] == 50 && b.flag("f").await["percent"] == 50
    })
    .await;
    let before = a.admin_get("/flags/f/history").await.body;

    let load = Arc::new(Load::default());
    let started = Instant::now();
    let mut workers = start_load(&[&a, &b], "f", 50, 24, &load);
    tokio::time::sleep(Duration::from_secs(2)).await;

    redis.stop();
    let killed = Instant::now();
    let at_kill = load.total();
    let mut degraded_ms = Vec::new();
    for replica in [&a, &b] {
        eventually(Duration::from_secs(3), "/readyz 503 after the kill", || async {
            replica.get("/readyz").await.status == 503
        })
        .await;
        degraded_ms.push(killed.elapsed().as_millis());
    }
    // Every kind of change is refused on both replicas while Redis is away, with a clear 503.
    let mut refused = 0;
    while killed.elapsed() < Duration::from_secs(9) {
        for replica in [&a, &b] {
            for (path, body) in [
                ("/flags/f/advance", json!({})),
                ("/flags/f/rollback", json!({"reason": "during the outage"})),
                ("/flags/f/pause", json!({})),
            ] {
                let r = replica.admin_post(path, body).await;
                assert_eq!((r.status, r.body["error"].as_str()), (503, Some("store_unavailable")), "{path}");
                refused += 1;
            }
            let r = replica.admin_put("/flags/g", json!({})).await;
            assert_eq!((r.status, r.body["error"].as_str()), (503, Some("store_unavailable")), "PUT");
            refused += 1;
            assert_eq!(replica.get("/readyz").await.status, 503, "/readyz during the outage");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(killed.elapsed())).await;

    redis.start_again();
    let restarted = Instant::now();
    let outage_evaluations = load.total() - at_kill;
    let mut recovery_ms = Vec::new();
    for replica in [&a, &b] {
        eventually(Duration::from_secs(2).saturating_sub(restarted.elapsed()), "/readyz 200 within 2 s", || async {
            replica.get("/readyz").await.status == 200
        })
        .await;
        recovery_ms.push(restarted.elapsed().as_millis());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.stop.store(true, Ordering::SeqCst);
    while workers.join_next().await.is_some() {}
    let elapsed = started.elapsed();

    // The change feed re-subscribed by itself: a change through one replica reaches the other.
    let changed = Instant::now();
    assert_eq!(a.admin_post("/flags/f/pause", json!({"reason": "after the outage"})).await.status, 200);
    eventually(Duration::from_secs(1), "the pause reaches B", || async { b.flag("f").await["status"] == "paused" })
        .await;
    let a_to_b_ms = changed.elapsed().as_millis();
    let changed = Instant::now();
    assert_eq!(b.admin_post("/flags/f/resume", json!({})).await.status, 200);
    eventually(Duration::from_secs(1), "the resume reaches A", || async { a.flag("f").await["status"] == "running" })
        .await;
    let b_to_a_ms = changed.elapsed().as_millis();

    // Nothing written before the outage was lost.
    let after = events(&a.admin_get("/flags/f/history").await.body);
    let expected = events(&before);
    assert_eq!(&after[..expected.len()], &expected[..], "history from before the outage");
    assert_eq!(actions(&after), ["create", "start", "advance", "pause", "resume"]);
    assert_eq!(b.flag("f").await["version"], 5);

    let total = load.total();
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "FIGURES outage: {total} evaluations in {:.1} s ({rate:.0}/s) over 2 replicas, {} during the 10 s outage; \
         failed {} non-200 {} wrong-percent {}; max latency {} ms; {refused} changes refused 503; /readyz 503 after {:?} ms; \
         /readyz 200 {:?} ms after the restart; feed A→B {a_to_b_ms} ms, B→A {b_to_a_ms} ms",
        elapsed.as_secs_f64(),
        outage_evaluations,
        load.failed.load(Ordering::SeqCst),
        load.not_200.load(Ordering::SeqCst),
        load.wrong.load(Ordering::SeqCst),
        load.max_latency_us.load(Ordering::SeqCst) / 1000,
        degraded_ms,
        recovery_ms,
    );
    assert_eq!(load.failed.load(Ordering::SeqCst), 0, "failed evaluations");
    assert_eq!(load.not_200.load(Ordering::SeqCst), 0, "non-200 evaluations");
    assert_eq!(load.wrong.load(Ordering::SeqCst), 0, "evaluations with another percentage");
    assert!(rate >= 2000.0, "{rate:.0} evaluations/s, want at least 2000");
}

/// A flag's rollout position as stored, with what must survive a restore.
fn position(flag: &Value) -> Value {
    json!({
        "status": flag["status"], "stage": flag["stage"], "percent": flag["percent"],
        "stage_entered_at": flag["stage_entered_at"], "created_at": flag["created_at"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_resets_no_flag_and_the_leader_restores_each_as_it_was() {
    let _timed = timed_test().await;
    let mut redis = RedisServer::start();
    let a = ServiceProcess::spawn(&redis.url(), &[], FAST).await;
    let b = ServiceProcess::spawn(&redis.url(), &[], FAST).await;
    let plan = json!({"stages": [{"name": "10%", "percent": 10, "soak_secs": 3600},
                                 {"name": "50%", "percent": 50, "soak_secs": 3600},
                                 {"name": "100%", "percent": 100, "soak_secs": 3600}]});
    // One flag in every status, and one deleted before the restart.
    let script: &[(&str, &[&str])] = &[
        ("ten", &["start"]),
        ("full", &["start", "advance", "advance"]),
        ("paused", &["start", "advance", "pause"]),
        ("rolled", &["start", "advance", "rollback"]),
        ("done", &["start", "advance", "advance", "advance"]),
        ("waiting", &[]),
        ("gone", &["start"]),
    ];
    for (flag, commands) in script {
        assert_eq!(a.admin_put(&format!("/flags/{flag}"), plan.clone()).await.status, 201);
        for command in *commands {
            assert_eq!(a.admin_post(&format!("/flags/{flag}/{command}"), json!({})).await.status, 200);
        }
    }
    assert_eq!(a.admin_delete("/flags/gone").await.status, 204);
    let names = ["ten", "full", "paused", "rolled", "done", "waiting"];
    let mut before = Vec::new();
    for name in names {
        let flag = a.flag(name).await;
        eventually(Duration::from_secs(2), "B has every flag", || async { b.flag(name).await == flag }).await;
        before.push(flag);
    }

    // Watch every flag on both replicas while Redis restarts empty: no answer may change.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, http) = (Arc::clone(&stop), a.http.clone());
        let urls: Vec<(String, u64)> = names
            .iter()
            .zip(&before)
            .flat_map(|(name, flag)| {
                let percent = flag["percent"].as_u64().expect("percent");
                [&a, &b].map(|r| (r.url(&format!("/flags/{name}/users/probe")), percent))
            })
            .collect();
        tokio::spawn(async move {
            let (mut checked, mut changed) = (0u64, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                for (url, percent) in &urls {
                    let r = http.get(url).send().await.expect("evaluation");
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    if status != 200 || body["percent"].as_u64() != Some(*percent) {
                        changed.push(format!("{url}: {status} {body}"));
                    }
                    checked += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (checked, changed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    let mut conn = redis.connection();
    let restored = eventually(Duration::from_secs(5), "every flag back in Redis", || {
        let found: Vec<Option<String>> = names
            .iter()
            .map(|n| redis::cmd("HGET").arg(format!("rollout:{{{n}}}:flag")).arg("doc").query(&mut conn).ok().flatten())
            .collect();
        std::future::ready(found.iter().all(Option::is_some))
    })
    .await;
    for replica in [&a, &b] {
        eventually(Duration::from_secs(3), "ready again", || async { replica.get("/readyz").await.status == 200 })
            .await;
    }
    // Both replicas take the restored flags (version + 1), as they were.
    for (name, flag) in names.iter().zip(&before) {
        for replica in [&a, &b] {
            let version = flag["version"].as_u64().expect("version") + 1;
            eventually(Duration::from_secs(2), "restored flag reaches the replica", || async {
                replica.flag(name).await["version"] == version
            })
            .await;
            assert_eq!(position(&replica.flag(name).await), position(flag), "{name}");
        }
        let history = events(&a.admin_get(&format!("/flags/{name}/history")).await.body);
        assert_eq!(actions(&history), ["restored"], "{name}");
        assert_eq!(history[0]["actor"], "controller");
        assert!(history[0]["reason"].as_str().is_some_and(|r| r.starts_with("restored from replica ")), "{history:?}");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let (checked, changed) = watcher.await.expect("watcher");
    assert!(changed.is_empty(), "answers changed during the restart: {changed:?}");
    // The flag deleted before the restart stays deleted, on both replicas, after resyncs.
    for replica in [&a, &b] {
        assert_eq!(replica.get("/flags/gone/users/u").await.status, 404);
    }
    let exists: bool = redis::cmd("EXISTS").arg("rollout:{gone}:flag").query(&mut conn).expect("exists");
    assert!(!exists, "a deleted flag was resurrected");
    // The restored flags take changes again; a delete still goes everywhere and stays gone.
    assert_eq!(b.admin_post("/flags/ten/advance", json!({})).await.status, 200);
    eventually(Duration::from_secs(1), "advance reaches A", || async { a.flag("ten").await["percent"] == 50 }).await;
    assert_eq!(a.admin_delete("/flags/waiting").await.status, 204);
    eventually(Duration::from_secs(1), "delete reaches B", || async {
        b.get("/flags/waiting/users/u").await.status == 404
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.get("/flags/waiting/users/u").await.status, 404, "still gone after a resync");

    println!(
        "FIGURES restart-empty: {} flags in 6 statuses, {checked} evaluations checked on 2 replicas during the restart, \
         {} changed; all flags back in Redis {} ms after it answered again; deleted flag not resurrected",
        names.len(),
        changed.len(),
        restored.as_millis(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_soak_is_replaced_within_one_lease_and_the_soak_goes_on_from_the_stored_start() {
    let _timed = timed_test().await;
    let redis = RedisServer::start();
    let mut a = ServiceProcess::spawn(&redis.url(), &[], FAST).await;
    let mut b = ServiceProcess::spawn(&redis.url(), &[], FAST).await;
    let soak_ms = 3000;
    let plan = json!({"advance_without_data": true, "stages": [
        {"name": "s1", "percent": 10, "soak_secs": 3},
        {"name": "s2", "percent": 50, "soak_secs": 3},
        {"name": "s3", "percent": 100, "soak_secs": 3}]});
    assert_eq!(a.admin_put("/flags/soak", plan).await.status, 201);
    eventually(Duration::from_secs(3), "a leader", || async { a.is_leader().await || b.is_leader().await }).await;
    assert_eq!(a.admin_post("/flags/soak/start", json!({})).await.status, 200);

    // Half way through the second stage's soak, SIGKILL the leader.
    eventually(Duration::from_secs(6), "stage s2", || async { a.flag("soak").await["stage"] == "s2" }).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a_leads = a.is_leader().await;
    let (leader, survivor) = if a_leads { (&mut a, &mut b) } else { (&mut b, &mut a) };
    assert_eq!(leader.flag("soak").await["stage"], "s2", "killed mid-soak");
    leader.kill();
    let killed = Instant::now();
    let survivor: &ServiceProcess = survivor;
    let takeover =
        eventually(Duration::from_secs(3), "the survivor leads", || async { survivor.is_leader().await }).await;

    eventually(Duration::from_secs(10), "completed", || async { survivor.flag("soak").await["status"] == "completed" })
        .await;
    let history = events(&survivor.admin_get("/flags/soak/history").await.body);
    assert_eq!(
        actions(&history),
        ["create", "start", "advance", "advance", "advance"],
        "no stage skipped, doubled or restarted"
    );
    let at = |e: &Value| -> i64 {
        let text = e["at"].as_str().expect("at");
        humantime::parse_rfc3339(text)
            .map(|t| t.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as i64)
            .expect("rfc3339")
    };
    let mut soaks = Vec::new();
    for (entered, left) in history[1..].iter().zip(&history[2..]) {
        assert_eq!(left["actor"], "controller");
        assert_eq!(left["from"]["stage"], entered["to"]["stage"]);
        soaks.push(at(left) - at(entered));
    }
    for (stage, soak) in soaks.iter().enumerate() {
        assert!(*soak >= soak_ms, "stage {} advanced after {soak} ms, before its soak of {soak_ms} ms", stage + 1);
        assert!(*soak <= soak_ms + 1000, "stage {} advanced after {soak} ms (soak {soak_ms} ms)", stage + 1);
    }
    println!(
        "FIGURES leader-kill: SIGKILL at 1.5 s into a 3 s soak; the other replica led after {} ms (lease 1000 ms, tick 100 ms); \
         stage soaks measured from the audit {soaks:?} ms (soak {soak_ms} ms); {} events, none skipped, doubled or restarted; \
         completed {} ms after the kill",
        takeover.as_millis(),
        history.len(),
        killed.elapsed().as_millis(),
    );
    assert!(takeover <= Duration::from_millis(1000 + 500), "took over after {takeover:?}");
}
