//! Start-up and shutdown of the real binary: flags declared in the config file do not stop it;
//! SIGTERM drains (`/readyz` 503 while everything else is served), then finishes the requests in
//! flight and the queued notifications, gives the leader lease up at once and exits 0; a rolling
//! restart behind a load balancer fails no request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ADMIN, RedisServer, ServiceProcess, eventually, timed_test};

/// Reads one answer (head and `content-length` body) from a kept-alive connection.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before a whole answer: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                    .map_or(0, |v| v.parse::<usize>().expect("length"));
                if body.len() >= length {
                    return text.into_owned();
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.expect("an answer within 5 s")
}

/// Waits until the server closes `stream`; how long that took. Fails if any byte comes.
async fn closed_without_a_byte(stream: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(0)) => started.elapsed(),
        Ok(Ok(n)) => panic!("an idle connection got {:?}", String::from_utf8_lossy(&buf[..n])),
        Ok(Err(e)) => panic!("an idle connection was reset ({e}) instead of closed"),
        Err(_) => panic!("an idle connection was not closed within {within:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_finishes_the_request_in_flight_hands_the_lease_over_at_once_and_exits_0() {
    let _timed = timed_test().await;
    let redis = RedisServer::start();
    // A lease of 10 s: without the release on shutdown, the other replica would wait that long.
    let env = [
        ("ROLLOUT_CONTROLLER_TICK_MS", "100"),
        ("ROLLOUT_LEASE_MS", "10000"),
        ("ROLLOUT_SHUTDOWN_GRACE_SECS", "5"),
        ("ROLLOUT_DRAIN_SECS", "2"),
    ];
    let mut a = ServiceProcess::spawn(&redis.url(), &[], &env).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while !a.is_leader().await {
        assert!(Instant::now() < deadline, "A never led");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = ServiceProcess::spawn(&redis.url(), &[], &env).await;
    assert!(!b.is_leader().await);
    let (a_name, _) = a.lease().await;

    // A request in flight: its head and half its body sent before the SIGTERM, the rest after.
    let body = json!({"stages": [{"name": "all", "percent": 100}], "salt": "sent-in-two-halves"}).to_string();
    let (first, second) = body.split_at(body.len() / 2);
    let mut in_flight = TcpStream::connect(a.addr).await.expect("connect");
    let head = format!(
        "PUT /flags/drained HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{first}",
        body.len()
    );
    in_flight.write_all(head.as_bytes()).await.expect("write");
    // Two kept-alive connections: one busy during the drain, one idle through it.
    let mut busy = TcpStream::connect(a.addr).await.expect("connect");
    let mut idle = TcpStream::connect(a.addr).await.expect("connect");
    for stream in [&mut busy, &mut idle] {
        stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
        let answer = read_answer(stream).await;
        assert!(answer.starts_with("HTTP/1.1 200") && !answer.contains("connection: close"), "{answer}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    a.signal("TERM");
    let termed = Instant::now();
    // The lease is released at once: B leads within a few of its ticks, not after 10 s.
    let mut conn = redis.connection();
    loop {
        let holder: Option<String> = redis::cmd("GET").arg("rollout:leader").query(&mut conn).expect("GET");
        if holder.as_deref() != Some(a_name.as_str()) {
            break;
        }
        assert!(termed.elapsed() < Duration::from_secs(3), "A kept the lease");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let released = termed.elapsed();

    // The drain: /readyz answers 503 on a new connection, every other route still serves, and the
    // busy kept-alive connection gets its answer with `connection: close`, then is closed.
    let ready = a.get("/readyz").await;
    assert_eq!((ready.status, ready.body["status"].as_str()), (503, Some("draining")), "{}", ready.body);
    assert_eq!(a.get("/healthz").await.status, 200);
    busy.write_all(b"GET /flags/drained/users/u1 HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    let answer = read_answer(&mut busy).await;
    assert!(answer.contains("connection: close"), "{answer}");
    closed_without_a_byte(&mut busy, Duration::from_secs(1)).await;
    let drained_checks = termed.elapsed();
    assert!(drained_checks < Duration::from_millis(1800), "the drain checks took {drained_checks:?}");

    let deadline = Instant::now() + Duration::from_secs(3);
    while !b.is_leader().await {
        assert!(Instant::now() < deadline, "B never led");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b_leads = termed.elapsed();

    // At the end of the drain the idle connection is closed without a byte, and the listener closes.
    let idle_closed = termed.elapsed() + closed_without_a_byte(&mut idle, Duration::from_secs(4)).await;
    let refused = loop {
        if TcpStream::connect(a.addr).await.is_err() {
            break termed.elapsed();
        }
        assert!(termed.elapsed() < Duration::from_secs(4), "a stopping replica still accepts connections");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(refused >= Duration::from_millis(1950), "the listener closed {refused:?} after SIGTERM, drain 2 s");
    assert!(idle_closed >= Duration::from_millis(1950), "the idle connection closed {idle_closed:?} after SIGTERM");

    // The request in flight finishes after the listener closed.
    in_flight.write_all(second.as_bytes()).await.expect("the rest of the body");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), in_flight.read_to_string(&mut answer))
        .await
        .expect("the answer within the grace period")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let exit = a.wait_exit(Duration::from_secs(5)).await.expect("exited within the grace period");
    let exited = termed.elapsed();
    assert!(exit.success(), "exit status {exit:?}; log:\n{}", a.logs());
    assert_eq!(b.admin_get("/flags/drained").await.body["definition"]["salt"], "sent-in-two-halves");

    println!(
        "FIGURES shutdown: SIGTERM with a request in flight (drain 2 s): lease released after {} ms, the other replica \
         led after {} ms (lease 10 s); /readyz 503 and requests served with connection: close during the drain; the \
         idle kept-alive connection closed after {} ms and the listener after {} ms; the request finished 201, exit 0 \
         after {} ms (grace 5 s)",
        released.as_millis(),
        b_leads.as_millis(),
        idle_closed.as_millis(),
        refused.as_millis(),
        exited.as_millis(),
    );
    assert!(b_leads < Duration::from_secs(1), "the other replica led after {b_leads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_flags_in_its_config_file_seeds_them_and_keeps_serving() {
    let _timed = timed_test().await;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("rollout.toml");
    std::fs::write(&config, "[flags.checkout]\nsalt = \"from-the-file\"\n\n[flags.search]\n").expect("write");
    let config = config.to_str().expect("a UTF-8 path");
    let mut service = ServiceProcess::launch(&redis.url(), &["--config", config], &[]);

    let started = Instant::now();
    loop {
        if let Some(status) = service.wait_exit(Duration::ZERO).await {
            panic!("the service exited ({status}) at start; log:\n{}", service.logs());
        }
        let seeded = |flag: &'static str| {
            let request = service.http.get(service.url(&format!("/flags/{flag}"))).bearer_auth(ADMIN).send();
            async move { request.await.is_ok_and(|r| r.status() == 200) }
        };
        if seeded("checkout").await && seeded("search").await {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the config flags were not created; log:\n{}",
            service.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seeded = started.elapsed();
    // The seeding task is done; the service runs on and serves.
    assert!(
        service.wait_exit(Duration::from_millis(500)).await.is_none(),
        "the service stopped after seeding its config flags; log:\n{}",
        service.logs()
    );
    assert_eq!(service.get("/readyz").await.status, 200);
    assert_eq!(service.flag("checkout").await["definition"]["salt"], "from-the-file");
    assert!(!service.logs().contains("ERROR"), "{}", service.logs());
    println!(
        "FIGURES config flags: 2 flags from the config file created {} ms after start; the service still served 500 ms later",
        seeded.as_millis()
    );
}

/// A webhook receiver that takes 300 ms to answer each rollback notice: records the flags of the
/// rollbacks it was sent.
async fn slow_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let rollbacks: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Arc<Mutex<Vec<String>>>>,
                 axum::Json(notice): axum::Json<Value>| async move {
                    if notice["action"] == "rollback" {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        seen.lock().expect("seen").push(notice["flag"].as_str().unwrap_or_default().to_owned());
                    }
                    "ok"
                },
            ),
        )
        .with_state(Arc::clone(&rollbacks));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rollbacks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_notices_still_queued_at_sigterm_are_delivered_before_the_process_exits() {
    let _timed = timed_test().await;
    let redis = RedisServer::start();
    let (hook, rollbacks) = slow_receiver().await;
    let env =
        [("ROLLOUT_NOTIFY_URLS", hook.as_str()), ("ROLLOUT_DRAIN_SECS", "0"), ("ROLLOUT_SHUTDOWN_GRACE_SECS", "5")];
    let mut service = ServiceProcess::spawn(&redis.url(), &[], &env).await;
    // 40 rollbacks: more than the 32 deliveries the notifier runs at once, so some are queued.
    let flags: Vec<String> = (0..40).map(|i| format!("f{i}")).collect();
    for flag in &flags {
        assert_eq!(service.admin_put(&format!("/flags/{flag}"), json!({})).await.status, 201);
        assert_eq!(service.admin_post(&format!("/flags/{flag}/start"), json!({})).await.status, 200);
    }
    for flag in &flags {
        let r = service.admin_post(&format!("/flags/{flag}/rollback"), json!({"reason": "test"})).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    service.signal("TERM");
    let termed = Instant::now();
    let exit = service.wait_exit(Duration::from_secs(8)).await.expect("exited within the grace period");
    let exited = termed.elapsed();
    assert!(exit.success(), "exit status {exit:?}; log:\n{}", service.logs());
    let mut delivered = rollbacks.lock().expect("seen").clone();
    delivered.sort();
    let mut expected = flags.clone();
    expected.sort();
    println!(
        "FIGURES notifier flush: SIGTERM right after 40 rollbacks (receiver answers in 300 ms, 32 at once): {} of 40 \
         rollback notices delivered before the exit, {} ms after SIGTERM (grace 5 s)",
        delivered.len(),
        exited.as_millis()
    );
    assert_eq!(delivered, expected, "log:\n{}", service.logs());
}

/// A load balancer in front of replicas, as Kubernetes and Envoy make one: each request goes to
/// the next replica whose `/readyz` answered 200 at its last probe (every 50 ms), over kept-alive
/// connections. It never retries: a request is either answered or failed.
#[derive(Clone, Default)]
struct Balancer {
    backends: Arc<Mutex<Vec<Backend>>>,
    next: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Backend {
    addr: SocketAddr,
    client: reqwest::Client,
    ready: Arc<AtomicBool>,
    probing: Arc<AtomicBool>,
}

impl Balancer {
    fn add(&self, addr: SocketAddr) {
        let backend = Backend {
            addr,
            client: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client"),
            ready: Arc::default(),
            probing: Arc::new(AtomicBool::new(true)),
        };
        let (ready, probing) = (Arc::clone(&backend.ready), Arc::clone(&backend.probing));
        tokio::spawn(async move {
            // Each probe on a new connection, like the kubelet's.
            let prober = reqwest::Client::builder()
                .timeout(Duration::from_millis(500))
                .pool_max_idle_per_host(0)
                .build()
                .expect("client");
            while probing.load(Ordering::SeqCst) {
                let answer = prober.get(format!("http://{addr}/readyz")).send().await;
                ready.store(answer.is_ok_and(|r| r.status() == 200), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        self.backends.lock().expect("backends").push(backend);
    }

    fn remove(&self, addr: SocketAddr) {
        let mut backends = self.backends.lock().expect("backends");
        for backend in backends.iter().filter(|b| b.addr == addr) {
            backend.probing.store(false, Ordering::SeqCst);
        }
        backends.retain(|b| b.addr != addr);
    }

    fn ready_count(&self) -> usize {
        self.backends.lock().expect("backends").iter().filter(|b| b.ready.load(Ordering::SeqCst)).count()
    }

    /// Sends `GET path` to the next ready replica: its status, or why there was none.
    async fn get(&self, path: &str) -> Result<u16, String> {
        let backend = {
            let backends = self.backends.lock().expect("backends");
            let ready: Vec<&Backend> = backends.iter().filter(|b| b.ready.load(Ordering::SeqCst)).collect();
            if ready.is_empty() {
                return Err("no ready replica".into());
            }
            ready[self.next.fetch_add(1, Ordering::Relaxed) % ready.len()].clone()
        };
        match backend.client.get(format!("http://{}{path}", backend.addr)).send().await {
            Ok(r) => Ok(r.status().as_u16()),
            Err(e) => Err(format!("{}: {e:?}", backend.addr)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_three_replicas_under_load_fails_no_request() {
    let _timed = timed_test().await;
    let redis = RedisServer::start();
    let env = [("ROLLOUT_DRAIN_SECS", "1"), ("ROLLOUT_SHUTDOWN_GRACE_SECS", "5")];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(ServiceProcess::spawn(&redis.url(), &[], &env).await);
    }
    assert_eq!(
        replicas[0].admin_put("/flags/f", json!({"stages": [{"name": "all", "percent": 100}]})).await.status,
        201
    );
    assert_eq!(replicas[0].admin_post("/flags/f/start", json!({})).await.status, 200);
    let balancer = Balancer::default();
    for replica in &replicas {
        eventually(Duration::from_secs(5), "the replica answers 100%", || async {
            replica.get("/flags/f/users/probe").await.body["percent"] == 100
        })
        .await;
        balancer.add(replica.addr);
    }
    eventually(Duration::from_secs(5), "3 replicas ready behind the balancer", || async {
        balancer.ready_count() == 3
    })
    .await;

    // Continuous load: 4 clients, each request waiting for the one before.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..4 {
        let (balancer, stop, sent, failures) =
            (balancer.clone(), Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failures));
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let answer = balancer.get(&format!("/flags/f/users/c{c}-{i}")).await;
                sent.fetch_add(1, Ordering::SeqCst);
                if answer != Ok(200) {
                    failures.lock().expect("failures").push(format!("{answer:?}"));
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Like a Deployment with maxSurge 1, maxUnavailable 0: a new replica is ready, then an old one stops.
    let started = Instant::now();
    let mut restarts = 0;
    for _ in 0..3 {
        let fresh = ServiceProcess::spawn(&redis.url(), &[], &env).await;
        balancer.add(fresh.addr);
        eventually(Duration::from_secs(5), "the new replica ready behind the balancer", || async {
            balancer.ready_count() == 4
        })
        .await;
        let mut old = replicas.remove(0);
        old.signal("TERM");
        let exit = old.wait_exit(Duration::from_secs(10)).await.expect("the old replica exits");
        assert!(exit.success(), "exit status {exit:?}; log:\n{}", old.logs());
        balancer.remove(old.addr);
        replicas.push(fresh);
        restarts += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client");
    }
    let sent = sent.load(Ordering::SeqCst);
    let failures = failures.lock().expect("failures").clone();
    println!(
        "FIGURES rolling restart: {restarts} restarts of 3 replicas in {} ms (drain 1 s) under 4 clients behind a load \
         balancer probing /readyz every 50 ms: {sent} requests sent, {} failed",
        started.elapsed().as_millis(),
        failures.len()
    );
    assert!(sent > 500, "only {sent} requests were sent");
    assert!(failures.is_empty(), "{} failed, the first: {:?}", failures.len(), &failures[..failures.len().min(5)]);
}
