//! What SDKs and browsers call: `GET /flags/config` and its ETag, the `GET /stream` change
//! stream, batch evaluations, and CORS on those routes.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{ADMIN, RedisServer, TestApp, eventually};
use crate::notifications::metric;

/// One Server-Sent Event (or heartbeat comment) as a client reads it.
#[derive(Debug, Default)]
struct Event {
    event: String,
    id: Option<u64>,
    data: Value,
    heartbeat: bool,
}

/// An open `GET /stream`, read event by event.
struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(app: &TestApp, last_event_id: Option<&str>) -> Stream {
        let mut req = app.http.get(app.url("/stream"));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        // The app's client times whole requests out after 10 s; a stream outlives that.
        let http = reqwest::Client::new();
        let resp = http.execute(req.build().expect("request")).await.expect("stream opens");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Stream { resp, buf: String::new() }
    }

    /// The next event, or `None` when the server ended the stream.
    async fn next(&mut self) -> Option<Event> {
        tokio::time::timeout(Duration::from_secs(10), self.read()).await.expect("an event within 10 s")
    }

    async fn read(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.buf.push_str(std::str::from_utf8(&chunk).expect("UTF-8")),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next event that is not a heartbeat.
    async fn event(&mut self) -> Event {
        loop {
            let event = self.next().await.expect("the stream goes on");
            if !event.heartbeat {
                return event;
            }
        }
    }
}

fn parse(block: &str) -> Event {
    let mut event = Event::default();
    for line in block.lines() {
        if line == ": heartbeat" {
            event.heartbeat = true;
        } else if let Some(name) = line.strip_prefix("event: ") {
            event.event = name.to_owned();
        } else if let Some(id) = line.strip_prefix("id: ") {
            event.id = Some(id.parse().expect("a numeric id"));
        } else if let Some(data) = line.strip_prefix("data: ") {
            event.data = serde_json::from_str(data).expect("JSON data");
        }
    }
    event
}

fn sha256(user: &str) -> String {
    hex::encode(Sha256::digest(user.as_bytes()))
}

async fn config(app: &TestApp, etag: Option<&str>) -> reqwest::Response {
    let mut req = app.http.get(app.url("/flags/config"));
    if let Some(etag) = etag {
        req = req.header("if-none-match", etag);
    }
    req.send().await.expect("answer")
}

/// Waits until `app` holds `flag` at `version`.
async fn wait_version(app: &TestApp, flag: &str, version: u64) {
    eventually(Duration::from_secs(5), "the replica to hold the version", || async {
        app.try_evaluate(flag, "probe").await.is_some_and(|b| b["version"] == version)
    })
    .await;
}

#[tokio::test]
async fn the_config_and_its_etag_are_equal_on_two_replicas_and_an_unchanged_one_is_304() {
    let redis = RedisServer::start();
    let a = TestApp::on(&redis).spawn().await;
    let b = TestApp::on(&redis).spawn().await;
    a.create_flag("checkout", json!({"internal_users": ["ann@example.com", "bob"], "salt": "s1"})).await;
    a.must("checkout", "start").await;
    let started = a.must("checkout", "advance").await;
    a.create_flag("dark", json!({})).await;
    let version = started["version"].as_u64().expect("version");
    wait_version(&b, "checkout", version).await;
    wait_version(&b, "dark", 1).await;

    let (ra, rb) = (config(&a, None).await, config(&b, None).await);
    let (ea, eb) = (ra.headers()["etag"].clone(), rb.headers()["etag"].clone());
    assert_eq!(ea, eb, "every replica gives the same ETag");
    let (ba, bb): (Value, Value) = (ra.json().await.expect("json"), rb.json().await.expect("json"));
    assert_eq!(ba, bb);
    assert_eq!(
        ba["flags"][0],
        json!({"name": "checkout", "version": version, "status": "running", "stage": "10%", "percent": 10,
               "salt": "s1", "internal_users_sha256": [sha256("ann@example.com"), sha256("bob")]})
    );
    assert_eq!(ba["flags"][1]["name"], "dark");
    assert_eq!((ba["flags"][1]["status"].as_str(), ba["flags"][1]["percent"].as_u64()), (Some("pending"), Some(0)));
    assert!(!ba.to_string().contains("ann@example.com"), "no internal user id is published");

    let etag = ea.to_str().expect("ascii");
    let unchanged = config(&b, Some(etag)).await;
    assert_eq!(unchanged.status(), 304);
    assert_eq!(unchanged.headers()["etag"], etag);
    assert!(unchanged.bytes().await.expect("body").is_empty());

    a.must("checkout", "rollback").await;
    wait_version(&b, "checkout", version + 1).await;
    let changed = config(&b, Some(etag)).await;
    assert_eq!(changed.status(), 200, "a change changes the ETag");
    assert_ne!(changed.headers()["etag"], etag);
    let body: Value = changed.json().await.expect("json");
    assert_eq!(
        (body["flags"][0]["status"].as_str(), body["flags"][0]["percent"].as_u64()),
        (Some("rolled_back"), Some(0))
    );
}

#[tokio::test]
async fn the_stream_sends_a_snapshot_then_a_rollback_and_a_deletion_made_through_another_replica() {
    let redis = RedisServer::start();
    let a = TestApp::on(&redis).spawn().await;
    let b = TestApp::on(&redis).spawn().await;
    a.create_flag("checkout", json!({})).await;
    a.must("checkout", "start").await;
    let advanced = a.must("checkout", "advance").await;
    let version = advanced["version"].as_u64().expect("version");
    wait_version(&b, "checkout", version).await;

    let mut stream = Stream::open(&b, None).await;
    let snapshot = stream.event().await;
    assert_eq!(snapshot.event, "snapshot");
    let config: Value = config(&b, None).await.json().await.expect("json");
    assert_eq!(snapshot.data, config, "the snapshot is the body of GET /flags/config");
    let first = snapshot.id.expect("an id");

    let started = Instant::now();
    a.must("checkout", "rollback").await;
    let change = stream.event().await;
    let took = started.elapsed();
    assert_eq!(change.event, "change");
    assert_eq!(
        (change.data["name"].as_str(), change.data["status"].as_str(), change.data["percent"].as_u64()),
        (Some("checkout"), Some("rolled_back"), Some(0))
    );
    assert_eq!(change.data["version"], version + 1);
    assert!(change.id.expect("an id") > first);
    println!("rollback through replica A reached a stream on replica B in {took:?}");

    let deleted = a.admin_delete("/flags/checkout").await;
    assert!(deleted.status == 200 || deleted.status == 204, "{}", deleted.body);
    let gone = stream.event().await;
    assert_eq!((gone.event.as_str(), gone.data.clone()), ("change", json!({"name": "checkout", "deleted": true})));
    assert!(gone.id > change.id);
}

#[tokio::test]
async fn last_event_id_replays_what_was_missed_or_falls_back_to_a_snapshot() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    app.create_flag("checkout", json!({})).await;
    let mut stream = Stream::open(&app, None).await;
    let seen = stream.event().await.id.expect("an id");
    drop(stream);

    app.must("checkout", "start").await;
    app.must("checkout", "advance").await;
    let mut resumed = Stream::open(&app, Some(&seen.to_string())).await;
    let (one, two) = (resumed.event().await, resumed.event().await);
    assert_eq!((one.event.as_str(), two.event.as_str()), ("change", "change"), "no snapshot: only what was missed");
    assert_eq!((one.id, two.id), (Some(seen + 1), Some(seen + 2)));
    assert_eq!((one.data["status"].as_str(), two.data["stage"].as_str()), (Some("running"), Some("10%")));

    // Nothing missed: nothing replayed, and the next change comes.
    let mut current = Stream::open(&app, Some(&(seen + 2).to_string())).await;
    app.must("checkout", "pause").await;
    let next = current.event().await;
    assert_eq!((next.event.as_str(), next.id), ("change", Some(seen + 3)));

    // An id this replica never gave (another replica's, or garbage): a new snapshot.
    for unknown in [(seen + 1000).to_string(), "7".into(), "not-a-number".into()] {
        let mut fresh = Stream::open(&app, Some(&unknown)).await;
        let first = fresh.event().await;
        assert_eq!((first.event.as_str(), first.id), ("snapshot", Some(seen + 3)), "Last-Event-ID {unknown}");
        assert_eq!(first.data["flags"][0]["status"], "paused");
    }
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).settings(|s| s.stream_heartbeat = Duration::from_millis(100)).spawn().await;
    let mut stream = Stream::open(&app, None).await;
    assert_eq!(stream.next().await.expect("snapshot").event, "snapshot");
    let started = Instant::now();
    for _ in 0..3 {
        assert!(stream.next().await.expect("a heartbeat").heartbeat);
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(280) && took < Duration::from_secs(3), "three heartbeats in {took:?}");
}

#[tokio::test]
async fn a_client_that_cannot_keep_up_is_dropped_while_the_others_get_every_change() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).settings(|s| s.stream_buffer = 8).spawn().await;
    // Big events: 5,000 digests each (~335 KB), so that 60 of them overflow any socket buffer.
    let internal: Vec<String> = (0..5000).map(|i| format!("u{i}")).collect();
    app.create_flag("big", json!({"internal_users": internal})).await;
    app.must("big", "start").await;
    let mut fast = Stream::open(&app, None).await;
    let mut slow = Stream::open(&app, None).await;
    assert_eq!(fast.event().await.event, "snapshot");

    const CHANGES: usize = 60;
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < CHANGES {
            if fast.event().await.event == "change" {
                got += 1;
            }
        }
        got
    });
    for i in 0..CHANGES {
        app.must("big", if i % 2 == 0 { "pause" } else { "resume" }).await;
    }
    let fast_got = tokio::time::timeout(Duration::from_secs(30), reader).await.expect("in time").expect("reader");
    assert_eq!(fast_got, CHANGES, "a client that keeps up gets every change");

    // The slow client reads only now: what its socket held, then the end of the stream.
    let mut slow_changes = 0;
    while let Some(event) = slow.next().await {
        slow_changes += usize::from(event.event == "change");
    }
    assert!(slow_changes < CHANGES, "the slow client was dropped after {slow_changes} changes");
    // Its place is free again: the feed still serves new streams.
    let mut again = Stream::open(&app, None).await;
    assert_eq!(again.event().await.data["flags"][0]["status"], "running");
    // The replica's metrics tell: three streams opened, only the last one still open (the slow
    // one was closed by the server, the fast one by its reader), events sent to each.
    let text = metrics(&app).await;
    assert_eq!(metric(&text, "rollout_stream_clients_opened_total", &[]), Some(3.0), "{text}");
    assert_eq!(metric(&text, "rollout_stream_clients", &[]), Some(1.0), "{text}");
    let events = metric(&text, "rollout_stream_events_total", &[]).unwrap_or(0.0);
    assert!(events >= (CHANGES + 3) as f64, "fast got a snapshot and every change, the others a snapshot: {events}");
}

async fn metrics(app: &TestApp) -> String {
    let reply = app.http.get(app.url("/metrics")).bearer_auth(crate::helpers::ADMIN).send().await.expect("metrics");
    reply.text().await.expect("metrics text")
}

#[tokio::test]
async fn streams_over_the_limit_are_refused_until_one_closes() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).settings(|s| s.max_stream_clients = 2).spawn().await;
    let one = Stream::open(&app, None).await;
    let _two = Stream::open(&app, None).await;
    let refused = app.get("/stream").await;
    assert_eq!((refused.status, refused.body["error"].as_str()), (503, Some("too_many_stream_clients")));
    let text = metrics(&app).await;
    assert_eq!(metric(&text, "rollout_stream_clients", &[]), Some(2.0), "{text}");
    assert_eq!(metric(&text, "rollout_stream_clients_refused_total", &[]), Some(1.0), "{text}");
    drop(one);
    eventually(Duration::from_secs(5), "a closed stream to free its place", || async {
        let resp = reqwest::Client::new().get(app.url("/stream")).send().await.expect("answer");
        resp.status() == 200
    })
    .await;
}

#[tokio::test]
async fn open_streams_end_when_the_server_shuts_down() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    let mut stream = Stream::open(&app, None).await;
    assert_eq!(stream.event().await.event, "snapshot");
    let started = Instant::now();
    // The grace period is 10 s: a stream the shutdown waited for would take all of it.
    tokio::time::timeout(Duration::from_secs(5), app.stop()).await.expect("the shutdown does not wait on the stream");
    assert!(stream.next().await.is_none(), "the stream ended");
    assert!(started.elapsed() < Duration::from_secs(5));
}

const ORIGIN: &str = "https://app.example.com";

#[tokio::test]
async fn cors_allows_the_configured_origin_on_the_client_routes_with_preflight() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).settings(|s| s.cors_origins = vec![ORIGIN.into()]).spawn().await;
    app.create_flag("checkout", json!({})).await;
    let allowed = |resp: &reqwest::Response| {
        resp.headers().get("access-control-allow-origin").map(|v| v.to_str().expect("ascii").to_owned())
    };
    for path in ["/flags/config", "/flag/u1", "/flags/checkout/users/u1"] {
        let ok = app.http.get(app.url(path)).header("origin", ORIGIN).send().await.expect("answer");
        assert_eq!(allowed(&ok).as_deref(), Some(ORIGIN), "{path}");
        let other = app.http.get(app.url(path)).header("origin", "https://evil.example").send().await.expect("answer");
        assert_eq!(allowed(&other), None, "{path}: another origin gets no CORS header");
    }
    let config = app.http.get(app.url("/flags/config")).header("origin", ORIGIN).send().await.expect("answer");
    assert!(config.headers()["access-control-expose-headers"].to_str().expect("ascii").contains("etag"));

    for (path, method, headers) in [
        ("/stream", "GET", "authorization, last-event-id"),
        ("/flags/checkout/evaluate", "POST", "content-type, authorization"),
        ("/ofrep/v1/evaluate/flags", "POST", "content-type, x-api-key"),
        ("/ofrep/v1/evaluate/flags/checkout", "POST", "content-type"),
    ] {
        let preflight = |origin: &str| {
            app.http
                .request(reqwest::Method::OPTIONS, app.url(path))
                .header("origin", origin)
                .header("access-control-request-method", method)
                .header("access-control-request-headers", headers)
                .send()
        };
        let ok = preflight(ORIGIN).await.expect("answer");
        assert!(ok.status().is_success(), "{path}: {}", ok.status());
        assert_eq!(allowed(&ok).as_deref(), Some(ORIGIN), "{path}");
        assert!(ok.headers()["access-control-allow-methods"].to_str().expect("ascii").contains(method));
        let other = preflight("https://evil.example").await.expect("answer");
        assert_eq!(allowed(&other), None, "{path}: another origin is not allowed");
    }
    // Admin routes get no CORS, whatever the origin.
    let admin = app.http.get(app.url("/flags")).bearer_auth(ADMIN).header("origin", ORIGIN).send().await;
    assert_eq!(allowed(&admin.expect("answer")), None);
}

#[tokio::test]
async fn without_cors_origins_no_route_sends_cors_headers() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    let resp = app.http.get(app.url("/flags/config")).header("origin", ORIGIN).send().await.expect("answer");
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

async fn batch(app: &TestApp, flag: &str, body: &Value) -> crate::helpers::Reply {
    app.send(app.http.post(app.url(&format!("/flags/{flag}/evaluate"))).json(body)).await
}

/// The batch answer for `users` equals `GET /flags/{flag}/users/{u}` for each of them.
async fn batch_equals_single_answers(app: &TestApp, flag: &str, users: &[String]) -> usize {
    let reply = batch(app, flag, &json!({"users": users})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let enabled = reply.body["enabled"].as_array().expect("enabled").clone();
    assert_eq!(enabled.len(), users.len());
    let single: Vec<Value> = futures::stream::iter(users).map(|u| app.evaluate(flag, u)).buffered(32).collect().await;
    let first = &single[0];
    assert_eq!(
        (&reply.body["flag"], &reply.body["version"], &reply.body["percent"], &reply.body["stage"]),
        (&first["flag"], &first["version"], &first["percent"], &first["stage"])
    );
    let mut on = 0;
    for ((user, batch), single) in users.iter().zip(&enabled).zip(&single) {
        assert_eq!(batch, &single["enabled"], "{flag} for {user}");
        on += usize::from(batch == true);
    }
    on
}

#[tokio::test]
async fn batch_answers_equal_single_evaluations_for_ten_thousand_users_in_each_state() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    let internal: Vec<String> = (0..50).map(|i| format!("user-{}", i * 7)).collect();
    let users: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    app.create_flag("plain", json!({"internal_users": internal})).await;
    app.create_flag("salted", json!({"internal_users": internal, "salt": "campaign-7"})).await;
    app.must("plain", "start").await;
    let internal_on = batch_equals_single_answers(&app, "plain", &users).await;
    assert_eq!(internal_on, 50, "internal stage: exactly the internal users");
    app.must("plain", "advance").await;
    let percent_on = batch_equals_single_answers(&app, "plain", &users).await;
    assert!((900..1_150).contains(&percent_on), "10% plus internal users: {percent_on}");
    app.must("salted", "start").await;
    app.must("salted", "advance").await;
    let salted_on = batch_equals_single_answers(&app, "salted", &users).await;
    assert!((900..1_150).contains(&salted_on), "salted 10%: {salted_on}");
    app.must("plain", "rollback").await;
    assert_eq!(batch_equals_single_answers(&app, "plain", &users).await, 0, "rolled back: nobody");
}

#[tokio::test]
async fn batch_limits_are_413_and_422_in_our_error_shape() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    app.create_flag("checkout", json!({})).await;
    let many: Vec<String> = (0..100_001).map(|i| format!("u{i}")).collect();
    let over = batch(&app, "checkout", &json!({"users": many})).await;
    assert_eq!((over.status, over.body["error"].as_str()), (413, Some("payload_too_large")), "{}", over.body);
    let at_limit = batch(&app, "checkout", &json!({"users": &many[..100_000]})).await;
    assert_eq!(at_limit.status, 200);
    assert_eq!(at_limit.body["enabled"].as_array().map(Vec::len), Some(100_000));

    let long = "x".repeat(513);
    for (body, field) in [
        (json!({"users": ["a", "b", "c", ""]}), "users[3]"),
        (json!({"users": ["a", long]}), "users[1]"),
        (json!({"users": ["a", 7]}), "users[1]"),
        (json!({"users": []}), "users"),
        (json!({}), "users"),
    ] {
        let r = batch(&app, "checkout", &body).await;
        assert_eq!((r.status, r.body["error"].as_str()), (422, Some("invalid_body")), "{body}: {}", r.body);
        assert!(r.body["message"].as_str().is_some_and(|m| m.contains(field)), "{body}: {}", r.body);
    }
    let unknown = batch(&app, "nope", &json!({"users": ["a"]})).await;
    assert_eq!((unknown.status, unknown.body["error"].as_str()), (404, Some("flag_not_found")));
    let broken = app
        .send(app.http.post(app.url("/flags/checkout/evaluate")).header("content-type", "application/json").body("{"))
        .await;
    assert_eq!((broken.status, broken.body["error"].as_str()), (400, Some("malformed_json")));
    // The raised limit is this route's only: other bodies still stop at 64 KiB.
    let big = json!({"internal_users": (0..20_000).map(|i| format!("user-{i}")).collect::<Vec<_>>()});
    let put = app.admin_put("/flags/other", big).await;
    assert_eq!(put.status, 413);
}
