//! The `/ui` dashboard: its embedded assets and headers, and an operator's rollback driven through
//! it in Debian's headless Chromium (`tests/ui/dashboard.mjs`, with playwright-core).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rollout_controller::clock::ManualClock;
use serde_json::json;

use crate::helpers::{ADMIN, RedisServer, TestApp};

const CHROMIUM: &str = "/usr/bin/chromium";
const SETUP: &str = "run: scripts/ci-ui-deps.sh (apt-get install -y chromium && npm ci --prefix tests/ui)";
const ROLLBACK_REASON: &str = "checkout errors reported by support";
/// An audit reason with markup: the dashboard must show it as text.
const MARKUP_REASON: &str = r#"internal users happy <img src=x onerror="document.title='pwned'"> ship it"#;

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

fn system_now_ms() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(since_epoch.as_millis()).expect("fits")
}

#[tokio::test]
async fn the_dashboard_is_served_self_contained_with_a_strict_csp_and_no_auth() {
    let app = TestApp::in_memory().spawn().await;

    let mut assets = Vec::new();
    for (path, content_type) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/favicon.png", "image/png"),
    ] {
        let resp = app.http.get(app.url(path)).send().await.expect("request completes");
        assert_eq!(resp.status(), 200, "{path} needs no token: the page asks for one");
        let headers = resp.headers().clone();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert_eq!(header("content-type"), content_type, "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let csp = header("content-security-policy");
        assert!(csp.starts_with("default-src 'self';"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: no inline script or style allowed: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        let body = resp.bytes().await.expect("body");
        assert!(!body.is_empty(), "{path}");
        assert!(
            !body.to_ascii_lowercase().windows(6).any(|w| w == b"http:/" || w == b"https:"),
            "{path} must not reference another origin (no CDN, no external request)"
        );
        assets.push(body);
    }
    assert!(assets[4].starts_with(b"\x89PNG\r\n\x1a\n"), "the favicon is a PNG");

    let html = String::from_utf8(assets[0].to_vec()).expect("UTF-8 page");
    assert_eq!(html, String::from_utf8_lossy(&assets[1]), "/ui and /ui/ serve the same page");
    // The CSP forbids inline code, so the page must have none: one external script, no handlers.
    assert_eq!(html.matches("<script").count(), 1, "one script tag");
    assert!(html.contains(r#"<script src="/ui/app.js" defer></script>"#));
    assert!(html.contains(r#"<link rel="stylesheet" href="/ui/app.css">"#));
    assert!(!html.contains("<style") && !html.contains(" style="), "no inline styles");
    let lowered = html.to_ascii_lowercase();
    assert!(
        !lowered.split(|c: char| c.is_ascii_whitespace()).any(|word| word.starts_with("on") && word.contains('=')),
        "no inline event handlers"
    );
    let js = String::from_utf8(assets[2].to_vec()).expect("UTF-8 script");
    assert!(!js.contains("innerHTML") && !js.contains("insertAdjacentHTML"), "API data is set as text only");

    // Unknown assets are the API's JSON 404, not the page.
    let missing = app.get("/ui/nope.js").await;
    assert_eq!((missing.status, missing.body["error"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn an_operator_rolls_back_a_flag_from_the_dashboard_in_headless_chromium() {
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing; {SETUP}");
    assert!(ui_dir().join("node_modules/playwright-core").is_dir(), "tests/ui/node_modules is missing; {SETUP}");

    let redis = RedisServer::start();
    // The manual clock starts half an hour ago rather than at T0, so the browser (on the real clock)
    // shows the times an operator would see; the test still sets every instant itself.
    let app = TestApp::on(&redis).clock(ManualClock::new(system_now_ms() - 30 * 60_000)).spawn().await;

    app.create_flag("checkout", json!({"internal_users": ["ann@example.com"], "salt": "checkout"})).await;
    let started = app.admin_post("/flags/checkout/start", json!({"reason": "launch review signed off"})).await;
    assert_eq!(started.status, 200, "{}", started.body);
    app.clock.advance_secs(12 * 60);
    let advanced = app.admin_post("/flags/checkout/advance", json!({"reason": MARKUP_REASON})).await;
    assert_eq!(advanced.status, 200, "{}", advanced.body);
    app.clock.advance_secs(17 * 60);
    let push = app
        .push(
            "checkout",
            json!({"requests": 1840, "errors": 7, "sent": 420, "delivered": 411, "bounced": 6, "complaints": 0,
                   "p99_latency_ms": 412.5, "queue_depth": 130}),
        )
        .await;
    assert_eq!((push.status, push.body["action"].is_null()), (200, true), "healthy metrics: {}", push.body);
    seed_neighbours(&app).await;

    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let screenshot = out_dir.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let child = tokio::process::Command::new("node")
        .arg(ui_dir().join("dashboard.mjs"))
        .current_dir(ui_dir())
        .env("BASE_URL", app.url(""))
        .env("TOKEN", ADMIN)
        .env("FLAG", "checkout")
        .env("OUT_DIR", &out_dir)
        .env("REASON", ROLLBACK_REASON)
        .env("EXPECT_TEXT", MARKUP_REASON)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node ({e}); it comes with the machine's Node.js; {SETUP}"));
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the browser test finishes within 60 s")
        .expect("node's output");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "tests/ui/dashboard.mjs failed ({}):\n{stdout}\n{stderr}", output.status);

    let flag = app.admin_get("/flags/checkout").await;
    assert_eq!((flag.body["status"].as_str(), flag.body["percent"].as_u64()), (Some("rolled_back"), Some(0)));
    let history = app.admin_get("/flags/checkout/history?limit=1").await;
    let latest = &history.body["events"][0];
    assert_eq!(
        (latest["action"].as_str(), latest["actor"].as_str(), latest["reason"].as_str()),
        (Some("rollback"), Some("operator:ann"), Some(ROLLBACK_REASON)),
        "{}",
        history.body
    );
    for (name, status) in [("email-digest", "rolled_back"), ("new-pricing", "paused"), ("search-v2", "pending")] {
        assert_eq!(app.admin_get(&format!("/flags/{name}")).await.body["status"], status, "{name} was not touched");
    }

    let png = std::fs::read(&screenshot).unwrap_or_else(|e| panic!("{}: {e}", screenshot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", screenshot.display());
    println!("dashboard screenshot: {}", screenshot.display());
}

/// Flags in the other states, so the page shows every badge next to the one under test.
async fn seed_neighbours(app: &TestApp) {
    app.create_flag(
        "search-v2",
        json!({"stages": [
            {"name": "internal", "internal_only": true, "soak_secs": 1800},
            {"name": "5%", "percent": 5, "soak_secs": 3600},
            {"name": "25%", "percent": 25, "soak_secs": 7200},
            {"name": "100%", "percent": 100, "soak_secs": 86400}]}),
    )
    .await;

    app.create_flag("new-pricing", json!({})).await;
    for command in ["start", "advance", "advance"] {
        app.must("new-pricing", command).await;
    }
    app.push("new-pricing", json!({"requests": 5200, "errors": 31, "p99_latency_ms": 960.0})).await;
    let paused =
        app.admin_post("/flags/new-pricing/pause", json!({"reason": "hold for the pricing page copy review"})).await;
    assert_eq!(paused.status, 200, "{}", paused.body);

    app.create_flag("email-digest", json!({})).await;
    app.must("email-digest", "start").await;
    app.must("email-digest", "advance").await;
    let breach = app.push("email-digest", json!({"sent": 400, "delivered": 352, "bounced": 41})).await;
    assert_eq!(breach.body["action"], "rollback", "a bounce-rate breach rolls back at once: {}", breach.body);
}
