//! Graceful shutdown of the real binary: SIGTERM finishes the request in flight, gives the leader
//! lease up at once and exits 0 within the grace period.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ADMIN, RedisServer};
use crate::process::{ServiceProcess, timed_test};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_request_in_flight_hands_the_lease_over_at_once_and_exits_0() {
    let _timed = timed_test().await;
    let redis = RedisServer::start();
    // A lease of 10 s: without the release on shutdown, the other replica would wait that long.
    let env =
        [("ROLLOUT_CONTROLLER_TICK_MS", "100"), ("ROLLOUT_LEASE_MS", "10000"), ("ROLLOUT_SHUTDOWN_GRACE_SECS", "5")];
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
    let deadline = Instant::now() + Duration::from_secs(3);
    while !b.is_leader().await {
        assert!(Instant::now() < deadline, "B never led");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b_leads = termed.elapsed();
    // New connections are no longer taken while the request in flight finishes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(TcpStream::connect(a.addr).await.is_err(), "a stopping replica still accepts connections");

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
        "FIGURES shutdown: SIGTERM with a request in flight: lease released after {} ms, the other replica led after {} ms \
         (lease 10 s), the request finished 201, exit 0 after {} ms (grace 5 s)",
        released.as_millis(),
        b_leads.as_millis(),
        exited.as_millis(),
    );
    assert!(b_leads < Duration::from_secs(1), "the other replica led after {b_leads:?}");
}
