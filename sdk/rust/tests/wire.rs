//! The client against a scripted HTTP peer that speaks the wire contract (docs in the crate
//! README): stream, reconnection, fallback, bootstrap, reporting. The end-to-end tests against
//! the real service live in the repository's tests/api.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollout_sdk::{Client, Reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
    /// Which connection it came on (numbered from 0 in accept order), and how many requests came
    /// on that connection before it.
    connection: usize,
    earlier_on_connection: usize,
}

enum Reply {
    /// Kept alive after it: the next request may come on the same connection.
    Json(u16, String),
    /// Event-stream chunks; the connection is then closed, or held open when `hold` is true.
    Sse(Vec<String>, bool),
}

type Handler = Arc<dyn Fn(&Request, usize) -> Reply + Send + Sync>;

/// An HTTP/1.1 peer; `handler` gets each request and its index.
struct Peer {
    url: String,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Peer {
    async fn start(handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let log = seen.clone();
        tokio::spawn(async move {
            let mut connection = 0;
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, connection, handler.clone(), log.clone()));
                connection += 1;
            }
        });
        Peer { url, seen }
    }

    fn requests(&self, path: &str) -> Vec<Request> {
        self.seen.lock().expect("log").iter().filter(|r| r.path == path).cloned().collect()
    }
}

/// Reads one request off `socket` (`buf` holds what was read past the previous one).
async fn read_request(
    socket: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, String, HashMap<String, String>, String)> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (first.next().unwrap_or("").to_owned(), first.next().unwrap_or("").to_owned());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    buf.drain(..head_end + 4);
    while buf.len() < length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body: Vec<u8> = buf.drain(..length).collect();
    Some((method, path, headers, String::from_utf8_lossy(&body).into_owned()))
}

async fn serve(mut socket: TcpStream, connection: usize, handler: Handler, log: Arc<Mutex<Vec<Request>>>) {
    let mut buf = Vec::new();
    for earlier_on_connection in 0.. {
        let Some((method, path, headers, body)) = read_request(&mut socket, &mut buf).await else { return };
        let request = Request { method, path, headers, body, connection, earlier_on_connection };
        let index = {
            let mut log = log.lock().expect("log");
            log.push(request.clone());
            log.len() - 1
        };
        match handler(&request, index) {
            Reply::Json(status, body) => {
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\netag: \"e1\"\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if socket.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::Sse(chunks, hold) => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for chunk in chunks {
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = socket.flush().await;
                }
                if hold {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                return;
            }
        }
    }
}

fn flag_json(name: &str, version: u64, status: &str, percent: u8) -> String {
    format!(
        r#"{{"name":"{name}","version":{version},"status":"{status}","stage":"s","percent":{percent},"salt":null,"internal_users_sha256":[]}}"#
    )
}

fn snapshot_event(id: u64, flags: &[String]) -> String {
    format!("event: snapshot\nid: {id}\ndata: {{\"flags\":[{}]}}\n\n", flags.join(","))
}

fn change_event(id: u64, data: &str) -> String {
    format!("event: change\nid: {id}\ndata: {data}\n\n")
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A URL nobody listens on.
async fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    format!("http://{}", listener.local_addr().expect("addr"))
}

fn fast(builder: rollout_sdk::ClientBuilder) -> rollout_sdk::ClientBuilder {
    builder.reconnect_backoff(Duration::from_millis(10), Duration::from_millis(50)).init_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn the_stream_snapshot_and_changes_drive_the_answers_and_a_reconnect_resumes_after_the_last_id() {
    let peer = Peer::start(|request, _| match request.path.as_str() {
        "/stream" if !request.headers.contains_key("last-event-id") => Reply::Sse(
            vec![
                snapshot_event(1, &[flag_json("f", 1, "running", 100)]),
                ": heartbeat\n\n".into(),
                change_event(2, &flag_json("f", 2, "rolled_back", 0)),
            ],
            false,
        ),
        "/stream" => Reply::Sse(vec![change_event(3, r#"{"name":"f","deleted":true}"#)], true),
        _ => Reply::Json(404, r#"{"error":"not_found","message":"no"}"#.into()),
    })
    .await;
    let client = fast(Client::builder(&peer.url).token("r3ad")).build().await.expect("client");
    assert!(client.is_ready());
    eventually("the reconnection after the first stream ended", || peer.requests("/stream").len() >= 2).await;
    let streams = peer.requests("/stream");
    assert_eq!(streams[0].headers.get("authorization").map(String::as_str), Some("Bearer r3ad"));
    assert_eq!(streams[0].headers.get("accept").map(String::as_str), Some("text/event-stream"));
    assert_eq!(streams[1].headers.get("last-event-id").map(String::as_str), Some("2"));
    eventually("the deletion replayed on the second connection", || {
        client.evaluation_or("f", "user-1", true).reason == Reason::Default
    })
    .await;
    assert!(client.is_connected());
    assert!(peer.requests("/flags/config").is_empty(), "a working stream needs no fallback fetch");
    client.close().await;
}

#[tokio::test]
async fn each_stream_opens_its_own_connection_while_reports_keep_theirs() {
    // Each stream ends after its snapshot, so the client keeps reconnecting while it reports.
    let peer = Peer::start(|request, _| match request.path.as_str() {
        "/stream" => Reply::Sse(vec![snapshot_event(1, &[flag_json("f", 1, "running", 100)])], false),
        _ => Reply::Json(200, r#"{"recorded":true}"#.into()),
    })
    .await;
    let client =
        fast(Client::builder(&peer.url)).report_interval(Duration::from_millis(20)).build().await.expect("client");
    for i in 0..200 {
        client.record("f", &format!("user-{i}"), rollout_sdk::Outcome { error: false, latency_ms: None });
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eventually("several streams, and reports on a kept-alive connection", || {
        let reused = peer.requests("/flags/f/metrics").iter().any(|r| r.earlier_on_connection > 0);
        peer.requests("/stream").len() >= 5 && reused
    })
    .await;
    client.close().await;
    let streams = peer.requests("/stream");
    assert!(streams.iter().all(|r| r.earlier_on_connection == 0), "{streams:?}");
    let reports: Vec<usize> = peer.requests("/flags/f/metrics").iter().map(|r| r.connection).collect();
    assert!(streams.iter().all(|s| !reports.contains(&s.connection)), "a stream came on a report's connection");
}

#[tokio::test]
async fn a_rollback_change_turns_every_user_off() {
    let peer = Peer::start(|_, _| {
        Reply::Sse(
            vec![
                snapshot_event(1, &[flag_json("f", 1, "running", 100)]),
                change_event(2, &flag_json("f", 2, "rolled_back", 0)),
            ],
            true,
        )
    })
    .await;
    let client = fast(Client::builder(&peer.url)).build().await.expect("client");
    eventually("the rollback", || client.evaluation("f", "user-1").version == Some(2)).await;
    for i in 0..1000 {
        let e = client.evaluation("f", &format!("user-{i}"));
        assert_eq!((e.enabled, e.reason), (false, Reason::FlagOff));
    }
    client.close().await;
}

#[tokio::test]
async fn when_the_stream_is_refused_the_configuration_is_fetched_instead() {
    let peer = Peer::start(|request, _| match request.path.as_str() {
        "/flags/config" => Reply::Json(200, format!(r#"{{"flags":[{}]}}"#, flag_json("f", 4, "running", 100))),
        _ => Reply::Json(503, r#"{"error":"too_many_stream_clients","message":"full"}"#.into()),
    })
    .await;
    let client = fast(Client::builder(&peer.url)).build().await.expect("client");
    assert_eq!(client.evaluation("f", "user-1").version, Some(4));
    assert!(!client.is_connected());
    eventually("a conditional refetch", || {
        peer.requests("/flags/config")
            .iter()
            .any(|r| r.headers.get("if-none-match").map(String::as_str) == Some("\"e1\""))
    })
    .await;
    client.close().await;
}

#[tokio::test]
async fn a_bootstrap_file_serves_offline_without_waiting() {
    let path = std::env::temp_dir().join(format!("rollout-sdk-wire-{}.json", std::process::id()));
    std::fs::write(&path, format!(r#"{{"flags":[{}]}}"#, flag_json("f", 9, "completed", 100))).expect("write");
    let started = Instant::now();
    let client = Client::builder(closed_url().await)
        .bootstrap_file(&path)
        .init_timeout(Duration::from_secs(30))
        .build()
        .await
        .expect("client");
    assert!(started.elapsed() < Duration::from_secs(5), "build waited {:?}", started.elapsed());
    let _ = std::fs::remove_file(&path);
    assert_eq!(client.evaluation("f", "anyone").version, Some(9));
    assert!(client.is_enabled("f", "anyone"));
    assert!(!client.is_enabled("unknown", "anyone"));
    assert!(client.is_enabled_or("unknown", "anyone", true));
    client.close().await;
    let missing = Client::builder("http://127.0.0.1:1").bootstrap_file("/nonexistent/flags.json").build().await;
    assert!(matches!(missing, Err(rollout_sdk::Error::BootstrapRead { .. })));
}

#[tokio::test]
async fn without_any_configuration_build_returns_after_the_bounded_wait_and_answers_defaults() {
    let started = Instant::now();
    let client = fast(Client::builder(closed_url().await).default_value(true))
        .init_timeout(Duration::from_millis(300))
        .build()
        .await
        .expect("client");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(5), "waited {waited:?}");
    assert!(!client.is_ready());
    assert!(client.is_enabled("f", "user-1"));
    assert!(!client.is_enabled_or("f", "user-1", false));
    client.close().await;
}

#[tokio::test]
async fn outcomes_reach_the_metrics_route_by_cohort() {
    let peer = Peer::start(|request, _| match request.path.as_str() {
        "/stream" => Reply::Sse(vec![snapshot_event(1, &[flag_json("f", 1, "running", 50)])], true),
        _ => Reply::Json(200, r#"{"recorded":true}"#.into()),
    })
    .await;
    let client = fast(Client::builder(&peer.url).token("r3ad").metrics_token("m3trics"))
        .report_interval(Duration::from_millis(50))
        .build()
        .await
        .expect("client");
    let mut expected = HashMap::from([("treatment", (0u64, 0u64)), ("control", (0, 0))]);
    for i in 0..1000 {
        let user = format!("user-{i}");
        let cohort = if client.is_enabled("f", &user) { "treatment" } else { "control" };
        let error = i % 7 == 0;
        client.record("f", &user, rollout_sdk::Outcome { error, latency_ms: Some(f64::from(i % 100)) });
        let e = expected.get_mut(cohort).expect("cohort");
        e.0 += 1;
        e.1 += u64::from(error);
    }
    let totals = || {
        let mut totals: HashMap<String, (u64, u64)> = HashMap::new();
        for r in peer.requests("/flags/f/metrics") {
            let body: serde_json::Value = serde_json::from_str(&r.body).expect("json body");
            let t = totals.entry(body["cohort"].as_str().unwrap_or("?").to_owned()).or_default();
            t.0 += body["requests"].as_u64().unwrap_or(0);
            t.1 += body["errors"].as_u64().unwrap_or(0);
        }
        totals
    };
    eventually("every outcome pushed", || totals().values().map(|t| t.0).sum::<u64>() == 1000).await;
    assert_eq!(totals().get("treatment"), expected.get("treatment"));
    assert_eq!(totals().get("control"), expected.get("control"));
    assert!(expected["treatment"].0 > 400 && expected["control"].0 > 400, "{expected:?}");
    let pushes = peer.requests("/flags/f/metrics");
    assert!(pushes.iter().all(|r| r.method == "POST"));
    assert!(pushes.iter().all(|r| r.headers.get("authorization").map(String::as_str) == Some("Bearer m3trics")));
    assert!(pushes.iter().all(|r| r.body.contains("p99_latency_ms")));
    assert_eq!(client.dropped_reports(), 0);
    client.close().await;
}

#[tokio::test]
async fn reports_the_service_cannot_take_are_dropped_and_counted_without_blocking() {
    let client = fast(Client::builder(closed_url().await))
        .init_timeout(Duration::ZERO)
        .report_interval(Duration::from_millis(20))
        .report_max_age(Duration::from_millis(100))
        .build()
        .await
        .expect("client");
    let started = Instant::now();
    for i in 0..10_000 {
        client.record("f", &format!("user-{i}"), rollout_sdk::Outcome::default());
    }
    assert!(started.elapsed() < Duration::from_secs(2), "record took {:?}", started.elapsed());
    eventually("the outcomes dropped", || client.dropped_reports() == 10_000).await;
    client.close().await;
    assert_eq!(client.dropped_reports(), 10_000);
}
