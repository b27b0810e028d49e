//! `rollout doctor`, the production audit: the real binary against a well set-up app and a badly
//! set-up one, and `GET /admin/status` behind it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::Method;
use axum::routing::any;
use rollout_controller::config::NamedToken;
use rollout_controller::domain::plan::FlagDefinition;
use rollout_controller::domain::rollout::Flag;
use rollout_controller::store::{MemoryStore, Store};
use serde_json::json;

use crate::helpers::{ADMIN, CliRun, RedisServer, T0, TestApp, eventually, free_port, rollout_cli};

/// A notification receiver on a free port that counts the HEAD requests it gets.
async fn receiver() -> (String, Arc<AtomicUsize>) {
    let heads = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&heads);
    let app = axum::Router::new().route(
        "/hook",
        any(move |method: Method| async move {
            if method == Method::HEAD {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, heads)
}

fn token(name: &str, secret: &str) -> NamedToken {
    NamedToken { name: name.into(), secret: secret.to_owned().into() }
}

/// The `[PASS]`/`[WARN]`/`[FAIL]` lines as `(verdict, check, detail)`.
fn lines(run: &CliRun) -> Vec<(String, String, String)> {
    run.stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|l| {
            let (verdict, rest) = l.split_once(' ').expect("verdict");
            let rest = rest.trim_start();
            let (check, detail) = rest.split_once("  ").unwrap_or((rest, ""));
            (verdict.to_owned(), check.trim().to_owned(), detail.trim().to_owned())
        })
        .collect()
}

fn verdicts(run: &CliRun) -> Vec<(String, String)> {
    lines(run).into_iter().map(|(v, c, _)| (v, c)).collect()
}

fn pair(v: &str, c: &str) -> (String, String) {
    (v.into(), c.into())
}

fn detail(run: &CliRun, check: &str) -> String {
    lines(run).into_iter().find(|(_, c, _)| c == check).map(|(_, _, d)| d).unwrap_or_default()
}

#[tokio::test]
async fn the_doctor_passes_a_production_setup() {
    let redis = RedisServer::start();
    let (hook, heads) = receiver().await;
    let app = TestApp::on(&redis)
        .settings(|s| {
            s.read_tokens = vec![token("app", "read-token-1")];
            s.metrics_tokens = vec![token("pusher", "metrics-token-1")];
            s.notify_urls = vec![hook.clone().into()];
            s.cio_signing_keys = vec!["whsec_production_key".to_owned().into()];
        })
        .system_clock()
        .spawn()
        .await;
    app.create_flag("checkout", json!({})).await;
    eventually(Duration::from_secs(5), "the app leads", || async { app.is_leader() }).await;

    let run = app.cli(&["doctor"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        verdicts(&run),
        [
            pair("[PASS]", "server"),
            pair("[PASS]", "ready"),
            pair("[PASS]", "store"),
            pair("[PASS]", "leader"),
            pair("[PASS]", "tokens"),
            pair("[PASS]", "signing keys"),
            pair("[PASS]", "notify #1"),
            pair("[PASS]", "clock"),
            pair("[PASS]", "plans"),
        ],
        "{}",
        run.stdout
    );
    assert!(run.stdout.ends_with("Result: 9/9 passed\n"), "{}", run.stdout);
    assert!(detail(&run, "store").starts_with("redis, round trip "), "{}", run.stdout);
    assert!(detail(&run, "leader").ends_with("holds the controller lease (the replica asked)"), "{}", run.stdout);
    assert_eq!(detail(&run, "tokens"), "1 admin, 1 read, 1 metrics, 0 alert tokens configured");
    assert_eq!(detail(&run, "notify #1"), "http… reachable (answered HTTP 200)");
    assert!(detail(&run, "clock").starts_with("within "), "{}", run.stdout);
    assert_eq!(detail(&run, "plans"), "1 flag, every plan valid");
    assert!(heads.load(Ordering::SeqCst) >= 1, "the receiver was really probed");
    assert!(!run.stdout.contains(&hook), "the notification URL is a secret: {}", run.stdout);

    let json = app.cli(&["doctor", "--json"]).await;
    assert_eq!(json.code, 0);
    let body = json.json();
    assert_eq!((body["ok"].as_bool(), body["passed"].as_u64(), body["total"].as_u64()), (Some(true), Some(9), Some(9)));
    assert_eq!(
        (body["checks"][2]["check"].as_str(), body["checks"][2]["result"].as_str()),
        (Some("store"), Some("pass"))
    );
    assert!(body["checks"][2]["detail"].as_str().is_some_and(|d| d.starts_with("redis, round trip ")), "{body}");
}

#[tokio::test]
async fn the_doctor_fails_a_memory_store_a_generated_token_a_dead_receiver_and_a_broken_plan() {
    // A plan stored before today's validation rules (or written behind the API's back).
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let broken = Flag::new("broken".into(), FlagDefinition { window_secs: 5, ..FlagDefinition::default() }, T0);
    let fine = Flag::new("fine".into(), FlagDefinition::default(), T0);
    for flag in [broken, fine] {
        store.write_flag(&flag, 0, &flag.creation_event("script", "seeded")).await.expect("seed");
    }
    let dead = format!("http://127.0.0.1:{}/hook", free_port());
    let app = TestApp::on_store(store)
        .settings(|s| {
            s.admin_tokens = vec![];
            s.notify_urls = vec![dead.into()];
        })
        .spawn()
        .await;
    let generated = app.generated_token().expect("a token was generated");

    let run = app.cli_with_token(&generated, &["doctor"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        verdicts(&run),
        [
            pair("[PASS]", "server"),
            pair("[PASS]", "ready"),
            pair("[FAIL]", "store"),
            pair("[PASS]", "leader"),
            pair("[FAIL]", "tokens"),
            pair("[WARN]", "signing keys"),
            pair("[FAIL]", "notify #1"),
            pair("[WARN]", "clock"),
            pair("[FAIL]", "plans"),
        ],
        "{}",
        run.stdout
    );
    assert!(run.stdout.ends_with("Result: 3/9 passed\n"), "{}", run.stdout);
    let fails: Vec<String> = run.stdout.lines().filter(|l| l.starts_with("[FAIL]")).map(str::to_owned).collect();
    assert_eq!(
        fails,
        [
            "[FAIL] store         embedded in-memory store: state is not shared between replicas and is lost on restart (set --redis-url)",
            "[FAIL] tokens        the admin token was generated at start-up and changes on every restart (set ROLLOUT_ADMIN_TOKENS)",
            "[FAIL] notify #1     http… unreachable: connection refused",
            "[FAIL] plans         1 of 2 plans invalid: broken: window_secs: must be between 10 and 86400",
        ]
    );
    assert_eq!(detail(&run, "clock"), "no store clock to compare with (memory store)");
    assert!(!run.stdout.contains(&generated) && !run.stderr.contains(&generated), "the token is never printed");
}

#[tokio::test]
async fn a_replica_clock_a_second_off_redis_time_fails_the_doctor() {
    let redis = RedisServer::start();
    // The harness's manual clock stands at 2023-11-14: far from Redis TIME.
    let app = TestApp::on(&redis).settings(|s| s.notify_urls = vec![]).spawn().await;
    let run = app.cli(&["doctor"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    let clock = detail(&run, "clock");
    assert!(
        clock.ends_with(" s behind Redis TIME: soak timers and metric windows disagree between replicas"),
        "{clock}"
    );
    assert_eq!(
        detail(&run, "notify"),
        "no notification URLs: transitions and rollbacks reach nobody (set ROLLOUT_NOTIFY_URLS)"
    );
    assert!(lines(&run).iter().any(|(v, c, _)| v == "[FAIL]" && c == "notify"), "{}", run.stdout);
}

#[tokio::test]
async fn the_doctor_fails_on_one_line_when_it_cannot_ask() {
    let refused = format!("http://127.0.0.1:{}", free_port());
    let run = rollout_cli(&["doctor", "--server", &refused], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stdout, format!("[FAIL] server  cannot reach {refused}: connection refused\nResult: 0/1 passed\n"));

    let app = TestApp::in_memory().spawn().await;
    let run = app.cli_with_token("wrong-token-here", &["doctor"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("[FAIL] admin status  unauthorized: set --token or ROLLOUT_TOKEN\nResult: 2/3 passed\n"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn admin_status_shows_secrets_only_by_their_first_four_characters() {
    let redis = RedisServer::start();
    let secret_hook = format!("http://127.0.0.1:{}/services/T000/B000/very-secret", free_port());
    let app = TestApp::on(&redis).settings(|s| s.notify_urls = vec![secret_hook.clone().into()]).spawn().await;
    let r = app.admin_get("/admin/status").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.body.to_string();
    assert!(!body.contains("very-secret") && !body.contains(ADMIN), "{body}");
    assert_eq!(
        r.body["notify_urls"],
        json!([{"url_prefix": "http…", "reachable": false, "detail": "connection refused"}])
    );
    assert_eq!((r.body["store"].as_str(), r.body["token_generated"].as_bool()), (Some("redis"), Some(false)));
    assert_eq!((r.body["admin_tokens"].as_u64(), r.body["read_tokens"].as_u64()), (Some(1), Some(0)));
    assert!(r.body["store_ping_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    assert!(r.body["store_time_ms"].as_i64().is_some_and(|t| t > T0));
    assert_eq!(r.body["server_time_ms"], T0, "the clock rollouts run on");
    assert_eq!(r.body["leader"], r.body["this_replica"]);

    let r = app.get("/admin/status").await;
    assert_eq!((r.status, r.body["error"].as_str()), (401, Some("unauthorized")));
}
