//! Connections whose first request is `GET /stream`, which the server frames itself instead of
//! through hyper: what a client sees on them (heads sent in pieces, chunked events, HTTP/1.0,
//! heads hyper would refuse, the header-read deadline) against the same requests on connections
//! hyper serves, and what they cost the process in memory.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use rollout_controller::config::NamedToken;

use crate::abuse::read_until_closed;
use crate::helpers::{ADMIN, RedisServer, ServiceProcess, TestApp, eventually};

/// A raw HTTP/1 connection, read by hand.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr) -> Raw {
        Raw { stream: TcpStream::connect(addr).await.expect("connect"), buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads more into the buffer; false when the server closed.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .expect("the server answers within 10 s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Takes `n` bytes off the buffer, reading as needed.
    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "the server closed early; had {:?}", String::from_utf8_lossy(&self.buf));
        }
        self.buf.drain(..n).collect()
    }

    /// Takes everything up to and including `end`.
    async fn take_until(&mut self, end: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(end.len()).position(|w| w == end) {
                return self.buf.drain(..at + end.len()).collect();
            }
            assert!(
                self.fill().await,
                "the server closed before {end:?}; had {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// An answer's head, lower-cased.
    async fn head(&mut self) -> String {
        String::from_utf8(self.take_until(b"\r\n\r\n").await).expect("UTF-8").to_lowercase()
    }

    /// One chunk of a chunked body (`None` for the last, empty one).
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        let line = self.take_until(b"\r\n").await;
        let size = usize::from_str_radix(std::str::from_utf8(&line[..line.len() - 2]).expect("hex"), 16).expect("size");
        let data = self.take(size).await;
        assert_eq!(self.take(2).await, b"\r\n", "a chunk ends with CRLF");
        (size > 0).then_some(data)
    }

    /// The next Server-Sent Event of a chunked stream (heartbeats skipped): its name and data.
    async fn event(&mut self) -> (String, Value) {
        let mut text = String::new();
        loop {
            text.push_str(std::str::from_utf8(&self.chunk().await.expect("the stream goes on")).expect("UTF-8"));
            while let Some((block, rest)) = text.split_once("\n\n") {
                let (block, rest) = (block.to_owned(), rest.to_owned());
                text = rest;
                if block.starts_with(':') {
                    continue;
                }
                let field = |name: &str| {
                    block.lines().find_map(|l| l.strip_prefix(name).map(str::to_owned)).unwrap_or_default()
                };
                return (field("event: "), serde_json::from_str(&field("data: ")).expect("JSON data"));
            }
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
}

#[tokio::test]
async fn a_stream_opened_in_pieces_gets_the_same_events_as_one_on_a_connection_hyper_serves() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).system_clock().spawn().await;
    assert_eq!(app.admin_put("/flags/f", json!({"stages": [{"name": "all", "percent": 100}]})).await.status, 201);

    // Ours: the request line, then the headers, then the blank line, each in its own write.
    let mut ours = Raw::connect(app.addr).await;
    for piece in ["GET /stream HTTP/1.1\r\n", "host: x\r\naccept: text/event-stream\r\n", "\r\n"] {
        ours.send(piece.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let head = ours.head().await;
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert_eq!(header(&head, "content-type"), Some("text/event-stream"));
    assert_eq!(header(&head, "transfer-encoding"), Some("chunked"));
    assert_eq!(header(&head, "connection"), Some("close"));
    assert!(header(&head, "date").is_some_and(|d| d.ends_with(" gmt")), "{head}");

    // hyper's: the stream as the second request of a keep-alive connection.
    let mut hypers = Raw::connect(app.addr).await;
    hypers.send(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let health = hypers.head().await;
    let length: usize = header(&health, "content-length").expect("a length").parse().expect("a number");
    hypers.take(length).await;
    hypers.send(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let head = hypers.head().await;
    assert!(head.starts_with("http/1.1 200 ok\r\n") && header(&head, "connection").is_none(), "{head}");

    let (ours_first, hypers_first) = (ours.event().await, hypers.event().await);
    assert_eq!(ours_first.0, "snapshot");
    assert_eq!(ours_first, hypers_first);
    assert_eq!(app.admin_post("/flags/f/start", json!({})).await.status, 200);
    let (ours_change, hypers_change) = (ours.event().await, hypers.event().await);
    assert_eq!((ours_change.0.as_str(), ours_change.1["status"].as_str()), ("change", Some("running")));
    assert_eq!(ours_change, hypers_change);

    // At shutdown ours ends with the last chunk, then the connection closes.
    let stopping = tokio::spawn(app.stop());
    loop {
        match ours.chunk().await {
            None => break,
            Some(data) => assert!(data.starts_with(b": heartbeat"), "{:?}", String::from_utf8_lossy(&data)),
        }
    }
    assert!(!ours.fill().await, "closed after the last chunk");
    tokio::time::timeout(Duration::from_secs(5), stopping).await.expect("the shutdown ends").expect("stop");
}

#[tokio::test]
async fn an_http_1_0_stream_is_delimited_by_the_close_and_a_token_is_still_required() {
    let redis = RedisServer::start();
    let reader = NamedToken { name: "reader".into(), secret: "r3ad".to_owned().into() };
    let app = TestApp::on(&redis).settings(|s| s.read_tokens = vec![reader]).spawn().await;

    let mut refused = Raw::connect(app.addr).await;
    refused.send(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let head = refused.head().await;
    assert!(head.starts_with("http/1.1 401 "), "{head}");
    assert_eq!(header(&head, "connection"), Some("close"));
    let length: usize = header(&head, "content-length").expect("a length").parse().expect("a number");
    let body: Value = serde_json::from_slice(&refused.take(length).await).expect("JSON");
    assert_eq!(body["error"], "unauthorized", "{body}");
    assert!(!refused.fill().await, "closed after the answer");

    let mut old = Raw::connect(app.addr).await;
    old.send(b"GET /stream HTTP/1.0\r\nauthorization: Bearer r3ad\r\n\r\n").await;
    let head = old.head().await;
    assert!(head.starts_with("http/1.0 200 ok\r\n"), "{head}");
    assert!(header(&head, "transfer-encoding").is_none() && header(&head, "content-length").is_none(), "{head}");
    let first = old.take_until(b"\n\n").await;
    assert!(String::from_utf8_lossy(&first).starts_with("event: snapshot\nid: "), "{first:?}");
}

/// The status line and error code of the answer to `request`, and whether the server then closed.
async fn refusal(addr: std::net::SocketAddr, request: &[u8]) -> (String, String, bool) {
    let mut raw = Raw::connect(addr).await;
    // The server may answer before it has read all of a large head.
    let _ = raw.stream.write_all(request).await;
    let head = raw.head().await;
    let length: usize = header(&head, "content-length").expect("a length").parse().expect("a number");
    let body: Value = serde_json::from_slice(&raw.take(length).await).expect("a JSON body");
    let status = head.lines().next().expect("a status line").to_owned();
    (status, body["error"].as_str().expect("a code").to_owned(), !raw.fill().await)
}

#[tokio::test]
async fn stream_heads_hyper_would_refuse_get_the_same_json_errors_and_a_late_one_is_cut_at_the_deadline() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).settings(|s| s.header_read_timeout = Duration::from_secs(1)).spawn().await;
    let many: String = (0..101).map(|i| format!("x-{i}: y\r\n")).collect();
    let huge = format!("x-big: {}\r\n", "a".repeat(600_000));
    let long_url = "a".repeat(65_535);
    let cases = [
        ("/{}", "host: x\r\nbad header\r\n".to_owned(), "400", "malformed_request"),
        ("/{}", many, "431", "headers_too_large"),
        ("/{}", huge, "431", "headers_too_large"),
        (&*format!("/{{}}?{long_url}"), String::new(), "414", "uri_too_long"),
    ];
    for (target, headers, status, code) in cases {
        // `/stream` is ours; `/streams` is hyper's (a route that does not exist: the head is
        // refused before routing).
        for path in ["stream", "streams"] {
            let request = format!("GET {} HTTP/1.1\r\n{headers}\r\n", target.replace("{}", path));
            let (line, error, closed) = refusal(app.addr, request.as_bytes()).await;
            assert!(line.starts_with(&format!("http/1.1 {status} ")), "{path}: {line}");
            assert_eq!((error.as_str(), closed), (code, true), "{path}");
        }
    }

    // A stream head that never ends: closed without an answer at the 1 s deadline.
    let mut late = TcpStream::connect(app.addr).await.expect("connect");
    late.write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n").await.expect("write");
    let (answer, closed) = read_until_closed(&mut late, Duration::from_secs(5)).await;
    let closed = closed.expect("closed");
    assert!(answer.is_empty(), "{answer}");
    assert!(closed >= Duration::from_millis(900) && closed < Duration::from_millis(2500), "{closed:?}");
}

#[tokio::test]
async fn the_header_deadline_runs_from_the_accept_even_when_the_first_byte_comes_late() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).settings(|s| s.header_read_timeout = Duration::from_secs(2)).spawn().await;
    for first in ["GET /healthz HTTP/1.1\r\n", "GET /stream HTTP/1.1\r\n"] {
        let accepted = Instant::now();
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stream.write_all(first.as_bytes()).await.expect("write");
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        let closed = accepted.elapsed();
        assert!(answer.is_empty(), "{answer}");
        assert!(closed >= Duration::from_millis(1900) && closed < Duration::from_millis(2900), "{first:?}: {closed:?}");
    }
}

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).expect("a value").parse().expect("KiB")
}

/// `n` connections to `addr`, each after sending `request` and reading up to `until`.
async fn open(addr: std::net::SocketAddr, n: usize, request: &'static [u8], until: &'static [u8]) -> Vec<Raw> {
    let mut opened = Vec::with_capacity(n);
    for _ in 0..n {
        let mut raw = Raw::connect(addr).await;
        raw.send(request).await;
        raw.take_until(until).await;
        opened.push(raw);
    }
    opened
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_costs_the_process_under_a_third_of_an_idle_keep_alive_connection_and_under_4_kib() {
    const N: usize = 2000;
    let redis = RedisServer::start();
    let service = ServiceProcess::spawn(
        &redis.url(),
        &[],
        &[("ROLLOUT_HEADER_READ_TIMEOUT_SECS", "120"), ("ROLLOUT_MAX_STREAM_CLIENTS", "5000")],
    )
    .await;
    // Warm up both paths (the runtime's and the allocator's first pages) before measuring.
    drop(open(service.addr, 50, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n", b"\"ok\"}").await);
    drop(open(service.addr, 50, b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n", b"\n\n").await);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let before = rss_kib(service.pid());
    let idle = open(service.addr, N, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n", b"\"ok\"}").await;
    let with_idle = rss_kib(service.pid());
    let streams = open(service.addr, N, b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n", b"\n\n").await;
    let with_streams = rss_kib(service.pid());
    let per_idle = (with_idle - before) as f64 * 1024.0 / N as f64;
    let per_stream = with_streams.saturating_sub(with_idle) as f64 * 1024.0 / N as f64;
    println!(
        "FIGURES stream memory: {N} idle keep-alive connections {per_idle:.0} B each, {N} idle streams {per_stream:.0} B each \
         (RSS {before} KiB, then {with_idle} KiB, then {with_streams} KiB)"
    );
    // Measured (debug build): about 2.8 KB against 12.7 KB; through hyper a stream cost more than
    // the idle connection (its buffers, plus the stream's state).
    assert!(per_stream < per_idle / 3.0, "a stream costs {per_stream:.0} B, an idle connection {per_idle:.0} B");
    assert!(per_stream < 4096.0, "a stream costs {per_stream:.0} B");

    // All of them are still served, and a closed stream leaves the feed.
    let open_streams = || async {
        let reply = service.http.get(service.url("/metrics")).bearer_auth(ADMIN).send().await.expect("metrics");
        let text = reply.text().await.expect("metrics text");
        crate::notifications::metric(&text, "rollout_stream_clients", &[])
    };
    assert_eq!(open_streams().await, Some(N as f64));
    drop(streams);
    eventually(Duration::from_secs(10), "the closed streams to leave the feed", || async {
        open_streams().await == Some(0.0)
    })
    .await;
    drop(idle);
}
