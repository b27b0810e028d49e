//! Slow and abusive clients against the real binary: idle connections, a slowloris client, a
//! request whose body never comes, and more connections than the limit.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ADMIN, RedisServer};
use crate::process::{ServiceProcess, timed_test};

/// Reads until the server closes the connection (or `limit` passes); what it sent and when it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), Some(started.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), None),
        }
    }
}

/// Latencies of `n` evaluations by a well-behaved client, in ms, sorted; panics on a non-200.
async fn normal_client(service: &ServiceProcess, n: usize) -> Vec<f64> {
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let r = service.get(&format!("/flags/f/users/user-{i}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_slow_clients_are_cut_off_while_a_normal_client_stays_fast() {
    let _timed = timed_test().await;
    let redis = RedisServer::start();
    let service = ServiceProcess::spawn(
        &redis.url(),
        &[],
        &[("ROLLOUT_HEADER_READ_TIMEOUT_SECS", "3"), ("ROLLOUT_REQUEST_TIMEOUT_SECS", "2")],
    )
    .await;
    assert_eq!(service.admin_put("/flags/f", json!({"stages": [{"name": "all", "percent": 100}]})).await.status, 201);
    assert_eq!(service.admin_post("/flags/f/start", json!({})).await.status, 200);
    let baseline = normal_client(&service, 200).await;

    // 500 connections that never send a byte.
    let opened = Instant::now();
    let mut idle = Vec::with_capacity(500);
    for _ in 0..500 {
        idle.push(TcpStream::connect(service.addr).await.expect("connect"));
    }
    // A slowloris client: a request head trickled in one byte every 100 ms.
    let slowloris = tokio::spawn({
        let addr = service.addr;
        async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let (mut reader, mut writer) = stream.into_split();
            let started = Instant::now();
            let trickle = tokio::spawn(async move {
                let head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                for byte in head {
                    if writer.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let mut buf = [0u8; 256];
            let closed = loop {
                match tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break Some(started.elapsed()),
                    Ok(Ok(_)) => continue,
                    Err(_) => break None,
                }
            };
            trickle.abort();
            closed
        }
    });
    // A request whose body never arrives: answered 408 by the request timeout.
    let stalled = tokio::spawn({
        let addr = service.addr;
        async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let head = format!(
                "PUT /flags/stalled HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\n\
                 content-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
            );
            stream.write_all(head.as_bytes()).await.expect("write");
            let started = Instant::now();
            let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(6)).await;
            (answer, started.elapsed())
        }
    });

    let loaded = normal_client(&service, 200).await;
    assert!(opened.elapsed() < Duration::from_secs(3), "the normal client ran while the idle connections were open");

    let slowloris_cut = slowloris.await.expect("slowloris").expect("the slowloris client was never cut off");
    assert!(
        slowloris_cut >= Duration::from_millis(2900) && slowloris_cut < Duration::from_secs(5),
        "slowloris cut after {slowloris_cut:?}, header timeout 3 s"
    );
    let (answer, stalled_after) = stalled.await.expect("stalled");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    assert!(
        stalled_after >= Duration::from_millis(1900) && stalled_after < Duration::from_secs(4),
        "{stalled_after:?}"
    );

    // The idle connections were closed by the header timeout too.
    let mut closed = 0;
    let deadline = opened + Duration::from_secs(6);
    for stream in &mut idle {
        let (_, at) = read_until_closed(stream, deadline.saturating_duration_since(Instant::now())).await;
        if at.is_some() {
            closed += 1;
        }
    }
    assert_eq!(closed, 500, "idle connections closed by the header-read timeout");
    assert_eq!(service.get("/readyz").await.status, 200);
    assert!(service.get("/flags/f/users/after").await.status == 200);

    println!(
        "FIGURES abuse: normal client p50/p99/max {:.1}/{:.1}/{:.1} ms alone, {:.1}/{:.1}/{:.1} ms with 500 idle connections, \
         a slowloris and a stalled body open; slowloris cut after {} ms and idle connections closed (header timeout 3 s); \
         stalled body answered 408 after {} ms (request timeout 2 s)",
        pct(&baseline, 0.5),
        pct(&baseline, 0.99),
        pct(&baseline, 1.0),
        pct(&loaded, 0.5),
        pct(&loaded, 0.99),
        pct(&loaded, 1.0),
        slowloris_cut.as_millis(),
        stalled_after.as_millis(),
    );
    assert!(pct(&loaded, 0.99) < 250.0, "p99 {:.1} ms under abuse", pct(&loaded, 0.99));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_limit_a_connection_is_answered_503_and_a_freed_slot_serves_again() {
    let _timed = timed_test().await;
    let redis = RedisServer::start();
    let service = ServiceProcess::spawn(&redis.url(), &[], &[("ROLLOUT_MAX_CONNECTIONS", "20")]).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(service.addr).await.expect("connect"));
    }
    // The server takes all 20 (in the order they came); the 21st is refused at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = TcpStream::connect(service.addr).await.expect("connect");
    let (refused, closed) = read_until_closed(&mut extra, Duration::from_secs(2)).await;
    assert!(closed.is_some() && refused.starts_with("HTTP/1.1 503"), "{refused:?}");
    assert!(refused.contains("connection: close"), "{refused}");
    let body = refused.split("\r\n\r\n").nth(1).expect("a body");
    let body: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(body["error"], "too_many_connections");

    // One slot frees: the next connection is served.
    drop(held.pop());
    let freed = Instant::now();
    let served = loop {
        let mut next = TcpStream::connect(service.addr).await.expect("connect");
        next.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.expect("write");
        let (answer, _) = read_until_closed(&mut next, Duration::from_secs(2)).await;
        if answer.starts_with("HTTP/1.1 200") {
            break freed.elapsed();
        }
        assert!(freed.elapsed() < Duration::from_secs(5), "a freed slot did not serve: {answer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "FIGURES connection limit: with 20 of 20 connections open the 21st was answered 503 too_many_connections and closed; \
         a freed slot served again after {} ms",
        served.as_millis()
    );
}
