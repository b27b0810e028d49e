//! The `/ui` dashboard: its embedded assets and headers, `--base-path`, and the page driven in
//! Debian's headless Chromium with playwright-core (`tests/ui/*.mjs`): a rollback through its dialog,
//! an operator's day under a path prefix (create with a 422 first, start, approve, schedule, freeze,
//! a rollback seen live), and the stream's fallback. Screenshots go to `target/ui-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rollout_controller::clock::ManualClock;
use serde_json::json;

use rollout_controller::config::NamedToken;
use secrecy::SecretString;

use crate::helpers::{ADMIN, RedisServer, TestApp};

const CHROMIUM: &str = "/usr/bin/chromium";
const SETUP: &str = "run: scripts/ci-ui-deps.sh (apt-get install -y chromium && npm ci --prefix tests/ui)";
const ROLLBACK_REASON: &str = "checkout errors reported by support";
const READ_TOKEN: &str = "read-token-for-apps";
/// An audit reason with markup: the dashboard must show it as text.
const MARKUP_REASON: &str = r#"internal users happy <img src=x onerror="document.title='pwned'"> ship it"#;

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

/// `target/ui-screenshots`, where the browser tests save what they saw.
fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("ui-screenshots")
}

/// Runs `tests/ui/<script>` with node and `vars`; panics with its output unless it passes within 90 s.
async fn run_script(script: &str, vars: &[(&str, String)]) -> String {
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing; {SETUP}");
    assert!(ui_dir().join("node_modules/playwright-core").is_dir(), "tests/ui/node_modules is missing; {SETUP}");
    let child = tokio::process::Command::new("node")
        .arg(ui_dir().join(script))
        .current_dir(ui_dir())
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node ({e}); it comes with the machine's Node.js; {SETUP}"));
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("the browser test finishes within 90 s")
        .expect("node's output");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "tests/ui/{script} failed ({}):\n{stdout}\n{stderr}", output.status);
    println!("tests/ui/{script}:\n{stdout}");
    stdout.into_owned()
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

fn system_now_ms() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(since_epoch.as_millis()).expect("fits")
}

#[tokio::test]
async fn the_dashboard_is_served_self_contained_with_a_strict_csp_and_no_auth() {
    let app = TestApp::in_memory().spawn().await;

    // `/ui` sends the browser on to `ui/`, relative, so the page's relative URLs resolve under it.
    let redirect = no_redirects().get(app.url("/ui")).send().await.expect("request completes");
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers().get("location").and_then(|v| v.to_str().ok()), Some("ui/"));

    let mut assets = Vec::new();
    for (path, content_type) in [
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
    assert!(assets[3].starts_with(b"\x89PNG\r\n\x1a\n"), "the favicon is a PNG");

    let html = String::from_utf8(assets[0].to_vec()).expect("UTF-8 page");
    // The CSP forbids inline code, so the page must have none: one external script, no handlers.
    assert_eq!(html.matches("<script").count(), 1, "one script tag");
    assert!(html.contains(r#"<script src="app.js" defer></script>"#));
    assert!(html.contains(r#"<link rel="stylesheet" href="app.css">"#));
    // Relative URLs only, so the page works under any prefix an ingress adds (`--base-path`).
    assert!(!html.contains("=\"/"), "no absolute path in the page");
    assert!(!html.contains("<style") && !html.contains(" style="), "no inline styles");
    let lowered = html.to_ascii_lowercase();
    assert!(
        !lowered.split(|c: char| c.is_ascii_whitespace()).any(|word| word.starts_with("on") && word.contains('=')),
        "no inline event handlers"
    );
    let js = String::from_utf8(assets[1].to_vec()).expect("UTF-8 script");
    assert!(!js.contains("innerHTML") && !js.contains("insertAdjacentHTML"), "API data is set as text only");
    assert!(!js.contains("fetch('/") && !js.contains("fetch(`/"), "the script's requests are relative");

    // Unknown assets are the API's JSON 404, not the page.
    let missing = app.get("/ui/nope.js").await;
    assert_eq!((missing.status, missing.body["error"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn an_operator_rolls_back_a_flag_from_the_dashboard_in_headless_chromium() {
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

    let out_dir = screenshot_dir();
    let screenshot = out_dir.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    run_script(
        "dashboard.mjs",
        &[
            ("BASE_URL", app.url("")),
            ("TOKEN", ADMIN.into()),
            ("FLAG", "checkout".into()),
            ("OUT_DIR", out_dir.display().to_string()),
            ("REASON", ROLLBACK_REASON.into()),
            ("EXPECT_TEXT", MARKUP_REASON.into()),
        ],
    )
    .await;

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
    println!("dashboard screenshots: {}", out_dir.display());
}

#[tokio::test]
async fn under_a_base_path_an_operator_creates_starts_and_approves_a_flag_and_sees_a_rollback_live() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis)
        .clock(ManualClock::new(system_now_ms() - 30 * 60_000))
        .settings(|s| {
            s.base_path = "/rollout".into();
            // Evaluations and the stream need a token: the dashboard's stream sends the admin one.
            s.read_tokens = vec![NamedToken { name: "app".into(), secret: SecretString::from(READ_TOKEN) }];
        })
        .spawn()
        .await;

    // A flag at 10% whose error rate is judged against the control cohort (the other 90%).
    app.create_flag(
        "checkout",
        // Pushes land one cohort at a time: no sample-ratio check on the shares in between.
        json!({"salt": "checkout", "compare": {"error_rate": {"max_increase": 0.01}}, "sample_ratio_check": false}),
    )
    .await;
    app.must("checkout", "start").await;
    app.clock.advance_secs(10 * 60);
    app.must("checkout", "advance").await;
    // The leader's readings before the dashboard opens, every 2 minutes of the stage's first 8,
    // with a little traffic in both cohorts: the chart of a freshly opened tab starts with them.
    for _ in 0..4 {
        assert!(app.tick().await.is_empty(), "soaking: the leader holds");
        app.clock.advance_secs(2 * 60);
        for (cohort, requests, errors) in [("treatment", 100, 1), ("control", 900, 4)] {
            app.push("checkout", json!({"cohort": cohort, "requests": requests, "errors": errors})).await;
        }
    }
    for (cohort, requests, errors) in [("treatment", 1_000, 6), ("control", 9_000, 41)] {
        let push = app.push("checkout", json!({"cohort": cohort, "requests": requests, "errors": errors})).await;
        assert_eq!((push.status, push.body["action"].is_null()), (200, true), "{cohort}: {}", push.body);
    }
    assert!(app.tick().await.is_empty(), "soaking: the leader holds");
    let readings = app.admin_get("/rollout/flags/checkout/health/history").await.body["readings"].clone();
    assert_eq!(readings.as_array().map(Vec::len), Some(5), "{readings}");
    app.create_flag("email-digest", json!({})).await;

    let out_dir = screenshot_dir();
    let stdout = run_script(
        "operate.mjs",
        &[
            ("BASE_URL", app.url("/rollout")),
            ("TOKEN", ADMIN.into()),
            ("OUT_DIR", out_dir.display().to_string()),
            ("LIVE_FLAG", "checkout".into()),
            ("NEW_FLAG", "search-v2".into()),
            ("SCHEDULED_FLAG", "email-digest".into()),
        ],
    )
    .await;
    assert!(stdout.contains("- ok"), "{stdout}");

    // What the browser did, as the service recorded it.
    let created = app.flag("search-v2").await;
    assert_eq!((created["status"].as_str(), created["stage"].as_str()), (Some("running"), Some("internal")));
    let gated = &created["definition"]["stages"][1];
    assert_eq!((gated["name"].as_str(), gated["percent"].as_u64()), (Some("5%"), Some(5)), "{created}");
    assert_eq!((gated["soak_secs"].as_u64(), gated["requires_approval"].as_bool()), (Some(1800), Some(true)));
    assert_eq!(created["definition"]["stages"][0]["soak_secs"], 45 * 60, "the edit: {created}");
    assert_eq!(created["definition"]["internal_users"], json!(["qa-bot"]), "the edit made elsewhere is kept");
    assert_eq!(created["approvals"][0]["by"], "operator:ann", "{created}");
    assert_eq!(app.admin_get("/rollout/freeze").await.body["frozen"], true, "frozen from the dashboard");
    assert_eq!(app.flag("checkout").await["status"], "rolled_back");
    let scheduled = app.flag("email-digest").await;
    assert_eq!(scheduled["status"], "scheduled", "{scheduled}");
    let starts_at =
        scheduled["scheduled_for"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()).expect("a time");
    let ahead_ms = starts_at.as_millisecond() - system_now_ms();
    assert!((58 * 60_000..=61 * 60_000).contains(&ahead_ms), "an hour from the browser's now: {scheduled}");
    for shot in ["editor-422.png", "plan-timeline.png", "guard-chart.png", "dashboard-rollback-live.png"] {
        let png = std::fs::read(out_dir.join(shot)).unwrap_or_else(|e| panic!("{shot}: {e}"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{shot} is not a PNG");
    }
    println!("dashboard screenshots: {}", out_dir.display());
}

#[tokio::test]
async fn with_a_base_path_every_route_is_served_under_it_and_at_the_root() {
    let app = TestApp::in_memory().settings(|s| s.base_path = "/rollout".into()).spawn().await;
    app.create_flag("checkout", json!({})).await;

    for path in ["/rollout/flags/checkout", "/flags/checkout"] {
        let flag = app.admin_get(path).await;
        assert_eq!((flag.status, flag.body["name"].as_str()), (200, Some("checkout")), "{path}: {}", flag.body);
    }
    let unauthenticated = app.get("/rollout/flags").await;
    assert_eq!(unauthenticated.status, 401, "the prefix changes no permission");
    assert_eq!(app.get("/rollout/healthz").await.status, 200);

    let redirect = no_redirects().get(app.url("/rollout/ui")).send().await.expect("request completes");
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers().get("location").and_then(|v| v.to_str().ok()), Some("ui/"));
    for path in ["/rollout/ui/", "/rollout/ui/app.js", "/rollout/ui/app.css", "/ui/"] {
        let resp = app.http.get(app.url(path)).send().await.expect("request completes");
        assert_eq!(resp.status(), 200, "{path}");
    }
    let missing = app.get("/rollout/nope").await;
    assert_eq!((missing.status, missing.body["error"].as_str()), (404, Some("not_found")), "{}", missing.body);
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

#[tokio::test]
async fn when_the_stream_is_refused_the_dashboard_reads_the_list_and_goes_live_again_by_itself() {
    let app = TestApp::in_memory()
        .settings(|s| {
            s.max_stream_clients = 1;
            // A stream whose client left is noticed at its next heartbeat.
            s.stream_heartbeat = Duration::from_secs(1);
        })
        .spawn()
        .await;
    app.create_flag("checkout", json!({})).await;
    app.must("checkout", "start").await;

    run_script(
        "fallback.mjs",
        &[
            ("BASE_URL", app.url("")),
            ("TOKEN", ADMIN.into()),
            ("OUT_DIR", screenshot_dir().display().to_string()),
            ("FLAG", "checkout".into()),
        ],
    )
    .await;
    assert_eq!(app.flag("checkout").await["status"], "paused");
}
