//! Bad input on every route, table-driven: each case a 4xx in the route's JSON error format, never a
//! 5xx or a dropped connection, and no case changes any state.

use std::time::Duration;

use rollout_controller::sources::customerio::sign;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ADMIN, RedisServer, T0, TestApp};

const CIO_KEY: &str = "whsec_bad_input";

/// What goes over the wire for one case.
struct Case {
    method: reqwest::Method,
    path: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    signed: bool,
    status: u16,
    /// `error` in our format, `errorCode` on the OFREP routes.
    code: &'static str,
}

fn case(method: &str, path: impl Into<String>, status: u16, code: &'static str) -> Case {
    Case {
        method: method.parse().expect("method"),
        path: path.into(),
        content_type: None,
        body: None,
        signed: false,
        status,
        code,
    }
}

impl Case {
    fn json(mut self, body: &str) -> Self {
        self.content_type = Some("application/json");
        self.body = Some(body.as_bytes().to_vec());
        self
    }

    fn raw(mut self, content_type: &'static str, body: Vec<u8>) -> Self {
        self.content_type = Some(content_type);
        self.body = Some(body);
        self
    }

    fn signed(mut self) -> Self {
        self.signed = true;
        self
    }
}

/// Everything the API holds, to compare before and after.
async fn state(app: &TestApp) -> Value {
    let flags = app.admin_get("/flags").await.body;
    let history = app.admin_get("/flags/f/history?limit=10000").await.body;
    json!({"flags": flags, "history": history})
}

#[tokio::test]
async fn bad_input_on_every_route_is_a_4xx_in_our_format_and_changes_nothing() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis)
        .settings(|s| s.cio_signing_keys = vec![SecretString::from(CIO_KEY.to_owned())])
        .spawn()
        .await;
    app.create_flag("f", json!({})).await;
    app.must("f", "start").await;
    let before = state(&app).await;

    let big = format!("{{\"reason\": \"{}\"}}", "x".repeat(70_000));
    let long_flag = "a".repeat(129);
    let long_user = "u".repeat(513);
    let not_utf8 = vec![b'{', 0xff, 0xfe, b'}'];
    let mut cases = Vec::new();

    // Every route with a JSON body: too large, not JSON, not UTF-8, another content type.
    let bodied: &[(&str, &str)] = &[
        ("PUT", "/flags/f"),
        ("POST", "/flags/f/start"),
        ("POST", "/flags/f/advance"),
        ("POST", "/flags/f/pause"),
        ("POST", "/flags/f/resume"),
        ("POST", "/flags/f/rollback"),
        ("POST", "/flags/f/metrics"),
        ("POST", "/alerts/alertmanager"),
    ];
    for (method, path) in bodied {
        cases.push(case(method, *path, 413, "payload_too_large").json(&big));
        cases.push(case(method, *path, 400, "malformed_json").json("{\""));
        cases.push(case(method, *path, 400, "malformed_json").raw("application/json", not_utf8.clone()));
        cases.push(case(method, *path, 415, "unsupported_media_type").raw("text/plain", b"{}".to_vec()));
        cases.push(
            case(method, *path, 415, "unsupported_media_type")
                .raw("application/x-www-form-urlencoded", b"a=1".to_vec()),
        );
    }
    // Numbers: negative, past u64, past f64, NaN spelled as a string, out of the allowed range.
    for command in ["start", "advance", "pause", "resume", "rollback"] {
        let path = format!("/flags/f/{command}");
        for body in [
            r#"{"expected_version": -1}"#,
            r#"{"expected_version": 18446744073709551616}"#,
            r#"{"expected_version": 1e400}"#,
            r#"{"expected_version": "NaN"}"#,
            r#"{"expected_version": 1.5}"#,
        ] {
            cases.push(case("POST", &path, 422, "invalid_body").json(body));
        }
    }
    for body in [
        r#"{"requests": -1}"#,
        r#"{"requests": 18446744073709551616}"#,
        r#"{"requests": 1e400}"#,
        r#"{"requests": 1000000001}"#,
        r#"{"p99_latency_ms": "NaN"}"#,
        r#"{"p99_latency_ms": -1}"#,
        r#"{"p99_latency_ms": 1e300}"#,
        r#"{"queue_depth": 1e400}"#,
        r#"{}"#,
    ] {
        cases.push(case("POST", "/flags/f/metrics", 422, "invalid_body").json(body));
    }
    for body in [
        r#"{"stages": [{"name": "a", "percent": -1}]}"#,
        r#"{"stages": [{"name": "a", "percent": 1e400}]}"#,
        r#"{"stages": [{"name": "a", "soak_secs": -5}]}"#,
        r#"{"stages": [{"name": "a", "soak_secs": 18446744073709551616}]}"#,
        r#"{"min_samples": "NaN"}"#,
        r#"{"window_secs": -1}"#,
        r#"{"thresholds": {"error_rate": "NaN"}}"#,
    ] {
        cases.push(case("PUT", "/flags/f", 422, "invalid_body").json(body));
    }
    cases.push(
        case("PUT", "/flags/f", 422, "invalid_definition").json(r#"{"stages": [{"name": "a", "percent": 101}]}"#),
    );
    cases.push(case("POST", "/alerts/alertmanager", 422, "invalid_body").json(r#"{"alerts": 5}"#));
    // An array where an object is expected, at the top or deeper: never read as positional fields.
    for (method, path) in bodied {
        for body in ["[]", "[1, 2]"] {
            cases.push(case(method, *path, 422, "invalid_body").json(body));
        }
    }
    for body in [r#"{"stages": [["a", 10]]}"#, r#"{"prometheus": ["http://127.0.0.1:9", 5, {}]}"#] {
        cases.push(case("PUT", "/flags/f", 422, "invalid_body").json(body));
    }
    for body in [
        r#"[null, null, null, []]"#,
        r#"{"alerts": [["firing", {"flag": "f"}]]}"#,
        // Statuses Alertmanager never sends are refused, not read as "resolved".
        r#"{"alerts": [{"status": "pending", "labels": {"flag": "f"}}]}"#,
        r#"{"alerts": [{"status": "FIRING", "labels": {"flag": "f"}}]}"#,
        r#"{"status": "weird", "alerts": []}"#,
    ] {
        cases.push(case("POST", "/alerts/alertmanager", 422, "invalid_body").json(body));
    }

    // Customer.io: the signature first, then the body.
    cases.push(case("POST", "/webhooks/customerio", 413, "payload_too_large").json(&big));
    cases.push(case("POST", "/webhooks/customerio", 401, "missing_signature").json("{}"));
    cases.push(case("POST", "/webhooks/customerio", 400, "malformed_json").json("{\"metric\": ").signed());
    cases.push(
        case("POST", "/webhooks/customerio", 400, "malformed_json").raw("application/json", not_utf8.clone()).signed(),
    );
    cases.push(
        case("POST", "/webhooks/customerio", 415, "unsupported_media_type").raw("text/plain", b"{}".to_vec()).signed(),
    );
    let long_event_id = format!(r#"{{"event_id": "{}", "object_type": "email", "metric": "sent"}}"#, "e".repeat(201));
    for body in [r#"["e1", "email", "sent", {}]"#, "[]", long_event_id.as_str()] {
        cases.push(case("POST", "/webhooks/customerio", 422, "invalid_body").json(body).signed());
    }

    // OFREP: its own error format.
    for path in ["/ofrep/v1/evaluate/flags/f", "/ofrep/v1/evaluate/flags"] {
        cases.push(case("POST", path, 413, "PARSE_ERROR").json(&big));
        cases.push(case("POST", path, 400, "PARSE_ERROR").json("{\"context\": "));
        cases.push(case("POST", path, 400, "PARSE_ERROR").raw("application/json", not_utf8.clone()));
        cases.push(case("POST", path, 415, "PARSE_ERROR").raw("text/plain", b"{}".to_vec()));
        cases.push(
            case("POST", path, 400, "INVALID_CONTEXT")
                .json(&format!("{{\"context\": {{\"targetingKey\": \"{long_user}\"}}}}")),
        );
    }
    cases.push(
        case("POST", "/ofrep/v1/evaluate/flags/nope", 404, "FLAG_NOT_FOUND")
            .json(r#"{"context": {"targetingKey": "u"}}"#),
    );

    // Ids: not UTF-8, too long, not a flag name; unknown flags.
    let flag_routes: &[(&str, &str)] = &[
        ("GET", "/flags/{}"),
        ("DELETE", "/flags/{}"),
        ("POST", "/flags/{}/start"),
        ("POST", "/flags/{}/advance"),
        ("POST", "/flags/{}/pause"),
        ("POST", "/flags/{}/resume"),
        ("POST", "/flags/{}/rollback"),
        ("GET", "/flags/{}/history"),
        ("GET", "/flags/{}/health"),
        ("GET", "/flags/{}/explain?user=u"),
        ("GET", "/flags/{}/report"),
        ("GET", "/flags/{}/users/u"),
    ];
    for (method, template) in flag_routes {
        for bad in ["bad%FFname", long_flag.as_str(), "bad%20name", "bad%2Fname"] {
            cases.push(case(method, template.replace("{}", bad), 400, "invalid_flag_name"));
        }
        cases.push(case(method, template.replace("{}", "nope"), 404, "flag_not_found"));
    }
    for bad in ["bad%FFname", long_flag.as_str(), "bad%20name"] {
        cases.push(case("PUT", format!("/flags/{bad}"), 400, "invalid_flag_name").json("{}"));
        cases.push(case("POST", format!("/flags/{bad}/metrics"), 400, "invalid_flag_name").json(r#"{"requests": 1}"#));
    }
    cases.push(case("POST", "/flags/nope/metrics", 404, "flag_not_found").json(r#"{"requests": 1}"#));
    for user in ["%FF%FE", "%C3%28", long_user.as_str()] {
        cases.push(case("GET", format!("/flag/{user}"), 400, "invalid_user"));
        cases.push(case("GET", format!("/flags/f/users/{user}"), 400, "invalid_user"));
    }
    cases.push(case("GET", format!("/flags/f/explain?user={long_user}"), 400, "invalid_user"));
    for user in ["%FF%FE", "%C3%28", "a%FF"] {
        cases.push(case("GET", format!("/flags/f/explain?user={user}"), 400, "invalid_query"));
    }
    // Query strings: numbers of the wrong kind are 400 `invalid_query`.
    for query in
        ["limit=-1", "limit=0", "limit=10001", "limit=99999999999999999999999", "limit=NaN", "limit=1e3", "other=1"]
    {
        cases.push(case("GET", format!("/flags/f/history?{query}"), 400, "invalid_query"));
    }
    cases.push(case("GET", "/flags/f/explain", 400, "invalid_query"));
    cases.push(case("GET", "/flags/f/report?format=xml", 400, "invalid_query"));

    let total = cases.len();
    for c in cases {
        let mut req = app.http.request(c.method.clone(), app.url(&c.path)).bearer_auth(ADMIN);
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        if let Some(body) = &c.body {
            if c.signed {
                let ts = (T0 / 1000).to_string();
                req = req.header("x-cio-timestamp", &ts).header("x-cio-signature", sign(CIO_KEY.as_bytes(), &ts, body));
            }
            req = req.body(body.clone());
        }
        let what = format!(
            "{} {} {}",
            c.method,
            c.path.chars().take(80).collect::<String>(),
            c.body.as_ref().map_or(String::new(), |b| String::from_utf8_lossy(&b[..b.len().min(60)]).into_owned())
        );
        let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let status = resp.status().as_u16();
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let bytes = resp.bytes().await.expect("body");
        let body: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{what}: {status} not JSON: {:?}", String::from_utf8_lossy(&bytes)));
        assert!(status < 500, "{what}: {status} {body}");
        assert!(content_type.starts_with("application/json"), "{what}: content type {content_type}");
        let code = body.get("error").or_else(|| body.get("errorCode")).and_then(Value::as_str);
        assert_eq!((status, code), (c.status, Some(c.code)), "{what}: {body}");
    }
    assert_eq!(state(&app).await, before, "a bad request changed the state");
    println!("FIGURES bad input: {total} bad requests over every route, every one a 4xx in JSON, state unchanged");
}

/// One request as written, path untouched (an HTTP client would rewrite `.` and `..` segments):
/// the status and the JSON body of the answer.
async fn raw_request(app: &TestApp, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered within 10 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{method} {path}: {answer:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status in {head:?}"));
    (status, serde_json::from_str(body).unwrap_or_else(|_| panic!("{method} {path}: {status} not JSON: {body:?}")))
}

#[tokio::test]
async fn dot_and_dot_dot_are_no_flag_names_on_any_route() {
    let app = TestApp::in_memory().spawn().await;
    app.create_flag("f", json!({})).await;
    let routes: &[(&str, &str, &str)] = &[
        ("PUT", "/flags/{}", "{}"),
        ("GET", "/flags/{}", ""),
        ("DELETE", "/flags/{}", ""),
        ("POST", "/flags/{}/start", "{}"),
        ("POST", "/flags/{}/advance", "{}"),
        ("POST", "/flags/{}/pause", "{}"),
        ("POST", "/flags/{}/resume", "{}"),
        ("POST", "/flags/{}/rollback", "{}"),
        ("POST", "/flags/{}/metrics", r#"{"requests": 1}"#),
        ("GET", "/flags/{}/history", ""),
        ("GET", "/flags/{}/health", ""),
        ("GET", "/flags/{}/explain?user=u", ""),
        ("GET", "/flags/{}/report", ""),
        ("GET", "/flags/{}/users/u", ""),
    ];
    let mut total = 0;
    // Dot segments, plain and percent-encoded: what RFC 3986 normalizers rewrite.
    for name in [".", "..", "%2E", "%2e%2E", "%2E."] {
        for (method, template, body) in routes {
            let path = template.replace("{}", name);
            let (status, answer) = raw_request(&app, method, &path, body).await;
            assert_eq!(
                (status, answer["error"].as_str()),
                (400, Some("invalid_flag_name")),
                "{method} {path}: {answer}"
            );
            total += 1;
        }
        let path = format!("/ofrep/v1/evaluate/flags/{name}");
        let (status, answer) = raw_request(&app, "POST", &path, r#"{"context": {"targetingKey": "u"}}"#).await;
        assert_eq!((status, answer["errorCode"].as_str()), (404, Some("FLAG_NOT_FOUND")), "{path}: {answer}");
        total += 1;
    }
    let names: Vec<Value> = app.admin_get("/flags").await.body["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .map(|f| f["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("f")]);
    println!(
        "FIGURES dot names: {total} requests naming . or .. answered 400 invalid_flag_name (404 on OFREP), none created"
    );
}
