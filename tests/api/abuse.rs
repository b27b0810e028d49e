//! Slow and abusive clients against the real binary: idle connections, a slowloris client, a
//! request whose body never comes, more connections than the limit, clients that never read their
//! answers, and requests hyper cannot parse.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ADMIN, RedisServer, ServiceProcess, TestApp, timed_test};

/// Reads until the server closes the connection (or `limit` passes); what it sent and when it closed.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
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
    // The server takes all 20 (in the order they came); one more is refused at once. On a busy
    // machine the server may not have accepted all 20 yet when the next one comes: that one then
    // takes the last slot, and the test keeps it open and tries again.
    let refused = loop {
        let mut extra = TcpStream::connect(service.addr).await.expect("connect");
        let (answer, closed) = read_until_closed(&mut extra, Duration::from_millis(500)).await;
        if closed.is_some() && answer.starts_with("HTTP/1.1 503") {
            break answer;
        }
        assert!(answer.is_empty() && held.len() < 25, "over the limit and not refused: {answer:?}");
        held.push(extra);
    };
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

/// A client that pipelines `requests` GETs of `/openapi.json` (58 KB each) and never reads: its
/// receive buffer is made small so that the server's writes block soon.
async fn non_reader(addr: std::net::SocketAddr, requests: usize) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket.connect(addr).await.expect("connect");
    let pipeline = "GET /openapi.json HTTP/1.1\r\nhost: x\r\n\r\n".repeat(requests);
    stream.write_all(pipeline.as_bytes()).await.expect("write the pipeline");
    stream
}

/// One `GET /healthz` on a fresh connection: the status line.
async fn status_of_a_fresh_request(addr: std::net::SocketAddr) -> String {
    let Ok(mut stream) = TcpStream::connect(addr).await else { return "connect failed".into() };
    if stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.is_err() {
        return "write failed".into();
    }
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(2)).await;
    answer.lines().next().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_pipeline_and_never_read_are_cut_off_by_the_write_timeout_and_free_their_slots() {
    let _timed = timed_test().await;
    let redis = RedisServer::start();
    // Header-read and request timeouts of 8 s: neither frees a connection whose answers are not
    // read. The write timeout (2 s) leaves time to open the 20 attackers on a busy machine.
    let service = ServiceProcess::spawn(
        &redis.url(),
        &[],
        &[
            ("ROLLOUT_MAX_CONNECTIONS", "20"),
            ("ROLLOUT_WRITE_TIMEOUT_SECS", "2"),
            ("ROLLOUT_HEADER_READ_TIMEOUT_SECS", "8"),
            ("ROLLOUT_REQUEST_TIMEOUT_SECS", "8"),
        ],
    )
    .await;
    let attack = Instant::now();
    let mut attackers = Vec::new();
    for _ in 0..20 {
        attackers.push(non_reader(service.addr, 200).await);
    }
    // Every slot is taken: the next connection is refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = status_of_a_fresh_request(service.addr).await;
    assert_eq!(refused, "HTTP/1.1 503 Service Unavailable", "the 20 non-readers did not hold every slot");

    // A normal client polls until it is served.
    let served = loop {
        let status = status_of_a_fresh_request(service.addr).await;
        if status == "HTTP/1.1 200 OK" {
            break attack.elapsed();
        }
        assert!(
            attack.elapsed() < Duration::from_secs(10),
            "a normal client was still refused ({status}) after {:?}: the non-readers pin their connections",
            attack.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Every slot comes free while the non-readers still read nothing: 20 clients are served at once,
    // each keeping its connection open, before the header-read timeout could have freed anything.
    let all_freed = loop {
        let mut served_at_once = Vec::new();
        for _ in 0..20 {
            match kept_alive_client(service.addr).await {
                Some(stream) => served_at_once.push(stream),
                None => break,
            }
        }
        if served_at_once.len() == 20 {
            break attack.elapsed();
        }
        assert!(
            attack.elapsed() < Duration::from_millis(7500),
            "only {} of 20 slots were free {:?} after the attack began",
            served_at_once.len(),
            attack.elapsed()
        );
        drop(served_at_once);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(attackers);
    println!(
        "FIGURES write timeout: 20 clients pipelining 200 requests for /openapi.json without reading held all 20 \
         connection slots; a normal client was served {} ms and all 20 slots were free {} ms after the attack began \
         (write timeout 2 s; header-read and request timeouts 8 s)",
        served.as_millis(),
        all_freed.as_millis()
    );
    assert!(served < Duration::from_millis(7500), "served only after {served:?}");
}

/// A client that gets one `GET /healthz` answered 200 and keeps its connection open (`None` when
/// it was refused).
async fn kept_alive_client(addr: std::net::SocketAddr) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}")) {
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got.starts_with(b"HTTP/1.1 200").then_some(stream)
}

/// One raw request and the service's whole answer (it closes the connection after an error).
async fn raw_answer(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // A server may answer and close before it has read all of a huge request: that write may fail.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    read.expect("the service closes the connection after its answer").expect("read");
    answer
}

/// One HTTP/1.1 answer split off the front of a stream: status line, lower-cased headers, body,
/// and what follows it.
struct Answer<'a> {
    status: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    rest: &'a [u8],
}

/// Splits the first answer off `raw`, its body by its content-length (none for an answer to HEAD).
fn next_answer(raw: &[u8], to_head: bool) -> Answer<'_> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head");
    let head = String::from_utf8(raw[..end].to_vec()).expect("a UTF-8 head");
    let mut lines = head.split("\r\n");
    let status = lines.next().expect("a status line").to_owned();
    let headers: Vec<(String, String)> = lines
        .map(|l| l.split_once(": ").expect("name: value"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect();
    let length: usize = match to_head {
        true => 0,
        false => headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().expect("length")),
    };
    let rest = &raw[end + 4..];
    assert!(rest.len() >= length, "body cut short: {status}");
    Answer { status, headers, body: rest[..length].to_vec(), rest: &rest[length..] }
}

/// Asserts `raw` starts with an error in our JSON shape with this status line and code; returns the rest.
fn assert_json_error<'a>(raw: &'a [u8], status_line: &str, code: &str) -> &'a [u8] {
    let Answer { status, headers, body, rest } = next_answer(raw, false);
    assert_eq!(status, status_line, "{}", String::from_utf8_lossy(raw));
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(header("content-type"), Some("application/json"), "{status}: {headers:?}");
    assert_eq!(header("connection"), Some("close"), "{status}: {headers:?}");
    let body: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{status}: a JSON body, got {:?} ({e})", String::from_utf8_lossy(&body)));
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    rest
}

#[tokio::test]
async fn requests_hyper_cannot_parse_are_answered_in_the_json_error_shape() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    let long_url = format!("GET /flags/{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(100 * 1024));
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\n{}\r\n",
        (0..200).map(|i| format!("x-header-{i}: {i}\r\n")).collect::<String>()
    );
    let cases: [(&str, Vec<u8>, &str, &str); 5] = [
        ("a 100 KB URL", long_url.into_bytes(), "HTTP/1.1 414 URI Too Long", "uri_too_long"),
        ("200 headers", many_headers.into_bytes(), "HTTP/1.1 431 Request Header Fields Too Large", "headers_too_large"),
        (
            "a raw 0xFF byte in the path",
            b"GET /flags/\xff HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
            "malformed_request",
        ),
        (
            "a duplicate Content-Length",
            b"POST /flags/x/metrics HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}".to_vec(),
            "HTTP/1.1 400 Bad Request",
            "malformed_request",
        ),
        (
            "HTTP/2.0 in the request line",
            b"GET /healthz HTTP/2.0\r\nhost: x\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
            "malformed_request",
        ),
    ];
    for (what, request, status, code) in &cases {
        let answer = raw_answer(app.addr, request).await;
        let rest = assert_json_error(&answer, status, code);
        assert!(rest.is_empty(), "{what}: bytes after the error: {:?}", String::from_utf8_lossy(rest));
    }

    // After a good request on the same connection, in one write with it (HEAD: no body), and in HTTP/1.0.
    for (first, status) in [
        ("HEAD /healthz HTTP/1.1\r\nhost: x\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ("GET /healthz HTTP/1.0\r\nconnection: keep-alive\r\n\r\n", "HTTP/1.0 400 Bad Request"),
    ] {
        let answer = raw_answer(app.addr, format!("{first}GET /\u{1} HTTP/1.1\r\n\r\n").as_bytes()).await;
        let ok = next_answer(&answer, first.starts_with("HEAD"));
        assert!(ok.status.ends_with("200 OK"), "{}", ok.status);
        let rest = assert_json_error(ok.rest, status, "malformed_request");
        assert!(rest.is_empty(), "{first}: {:?}", String::from_utf8_lossy(rest));
    }
    println!(
        "FIGURES parse errors: {} malformed requests (100 KB URL, 200 headers, 0xFF in the path, duplicate \
         Content-Length, HTTP/2.0 request line) and 2 pipelined after a good answer: every one answered in the JSON \
         error shape with content-type application/json",
        cases.len()
    );
}
