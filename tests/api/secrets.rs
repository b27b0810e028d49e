//! Secrets against the real binary: tokens, signing keys, the Redis password and webhook URLs never
//! show up in its logs (captured at debug level, dependencies included) nor in its answers; every
//! scope is refused where it does not belong; `rediss://` with a private CA and a password.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rollout_controller::sources::customerio::sign;
use serde_json::{Value, json};

use crate::helpers::{ADMIN, RedisCluster, RedisOptions, RedisServer, ServiceProcess, TlsFiles, free_port, timed_test};

/// A secret that cannot occur by chance: `<what>-<random hex>`.
fn secret(what: &str) -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("random");
    format!("{what}-{}", hex::encode(bytes))
}

/// Polls `service` until it answers 100% for `flag`, up to `limit`; how long that took.
async fn until_full(service: &ServiceProcess, flag: &str, limit: Duration, what: &str) -> Duration {
    let started = Instant::now();
    while service.get(&format!("/flags/{flag}/users/u")).await.body["percent"] != 100 {
        assert!(started.elapsed() < limit, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    WrongToken,
    Admin,
    Read,
    Metrics,
    Alerts,
}

const CALLERS: [Caller; 6] =
    [Caller::Anonymous, Caller::WrongToken, Caller::Admin, Caller::Read, Caller::Metrics, Caller::Alerts];

/// Who may call a route: `open` for everyone, else the scopes allowed besides admin.
struct Route {
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    open: bool,
    allowed: &'static [Caller],
}

fn route(method: &'static str, path: &'static str, allowed: &'static [Caller]) -> Route {
    Route { method, path, body: None, open: false, allowed }
}

impl Route {
    fn with(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    fn open(mut self) -> Self {
        self.open = true;
        self
    }

    fn expected(&self, caller: Caller) -> &'static str {
        match caller {
            _ if self.open => "2xx",
            Caller::Anonymous | Caller::WrongToken => "401",
            Caller::Admin => "2xx",
            c if self.allowed.contains(&c) => "2xx",
            _ => "403",
        }
    }
}

fn class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        401 => "401",
        403 => "403",
        _ => "other",
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with openssl(1).
fn make_certificates(dir: &Path) -> TlsFiles {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl must be installed");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=rollout test CA"],
    ]
    .concat());
    run(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat());
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").expect("ext file");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    TlsFiles { cert: dir.join("server.pem"), key: dir.join("server.key"), ca: dir.join("ca.pem") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_debug_logs_or_answers_and_each_scope_is_refused_where_it_does_not_belong() {
    let _timed = timed_test().await;
    let password = secret("redis-password");
    let mut redis =
        RedisServer::start_with(RedisOptions { password: Some(password.clone()), ..RedisOptions::default() });
    let (read, metrics, alerts, cio, wrong) = (
        secret("read-token"),
        secret("metrics-token"),
        secret("alert-token"),
        secret("cio-key"),
        secret("wrong-token"),
    );
    let (hook_user, hook_path) = (secret("hook-password"), secret("hook-path"));
    // Nobody listens there: failed deliveries are logged, with the URL redacted.
    let notify = format!("http://ops:{hook_user}@127.0.0.1:{}/services/T0/B0/{hook_path}", free_port());
    // A [[notify]] target of the config file, its URL from the environment: redacted the same way.
    let slack_path = secret("slack-path");
    let slack = format!("http://127.0.0.1:{}/services/T1/B1/{slack_path}", free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("rollout.toml");
    std::fs::write(&config, "[[notify]]\nurl_env = \"TEST_SLACK_WEBHOOK\"\nformat = \"slack\"\n").expect("write");
    let service = ServiceProcess::spawn(
        &redis.url(),
        &["--config", config.to_str().expect("a UTF-8 path")],
        &[
            ("TEST_SLACK_WEBHOOK", &slack),
            ("RUST_LOG", "debug"),
            ("ROLLOUT_LOG_FORMAT", "json"),
            ("ROLLOUT_DEFAULT_FLAG", "f"),
            ("ROLLOUT_READ_TOKENS", &format!("app:{read}")),
            ("ROLLOUT_METRICS_TOKENS", &format!("pusher:{metrics}")),
            ("ROLLOUT_ALERT_TOKENS", &format!("am:{alerts}")),
            ("ROLLOUT_CIO_SIGNING_KEYS", &cio),
            ("ROLLOUT_NOTIFY_URLS", &notify),
        ],
    )
    .await;
    let secrets = [
        ("admin token", ADMIN.to_owned()),
        ("read token", read.clone()),
        ("metrics token", metrics.clone()),
        ("alert token", alerts.clone()),
        ("Customer.io signing key", cio.clone()),
        ("Redis password", password.clone()),
        ("webhook password", hook_user.clone()),
        ("webhook path", hook_path.clone()),
        ("[[notify]] webhook path", slack_path.clone()),
        ("rejected token", wrong.clone()),
    ];
    let plan = json!({"stages": [{"name": "10%", "percent": 10}, {"name": "all", "percent": 100}]});
    for (flag, commands) in [
        ("f", &["start"][..]),
        ("t-start", &[][..]),
        ("t-advance", &["start"][..]),
        ("t-pause", &["start"][..]),
        ("t-resume", &["start", "pause"][..]),
        ("t-rollback", &["start"][..]),
        ("t-delete", &[][..]),
    ] {
        assert_eq!(service.admin_put(&format!("/flags/{flag}"), plan.clone()).await.status, 201);
        for command in commands {
            assert_eq!(service.admin_post(&format!("/flags/{flag}/{command}"), json!({})).await.status, 200);
        }
    }

    use Caller::{Alerts, Metrics, Read};
    let alert = json!({"version": "4", "status": "resolved", "alerts": []});
    let routes = [
        route("GET", "/flag/u", &[Read]),
        route("GET", "/flags/f/users/u", &[Read]),
        route("POST", "/ofrep/v1/evaluate/flags/f", &[Read]).with(json!({"context": {"targetingKey": "u"}})),
        route("POST", "/ofrep/v1/evaluate/flags", &[Read]).with(json!({"context": {"targetingKey": "u"}})),
        route("GET", "/flags/f/explain?user=u", &[Read]),
        route("GET", "/flags/f/health", &[Read, Metrics]),
        route("POST", "/flags/f/metrics", &[Metrics]).with(json!({"requests": 10})),
        route("POST", "/alerts/alertmanager", &[Alerts]).with(alert),
        route("GET", "/flags", &[]),
        route("GET", "/flags/f", &[]),
        route("PUT", "/flags/f", &[]).with(plan.clone()),
        route("POST", "/flags/t-start/start", &[]),
        route("POST", "/flags/t-advance/advance", &[]),
        route("POST", "/flags/t-pause/pause", &[]),
        route("POST", "/flags/t-resume/resume", &[]),
        route("POST", "/flags/t-rollback/rollback", &[]),
        route("DELETE", "/flags/t-delete", &[]),
        route("GET", "/flags/f/history", &[]),
        route("GET", "/flags/f/report", &[]),
        route("GET", "/debug/signals", &[]),
        route("GET", "/admin/status", &[]),
        route("GET", "/metrics", &[Read, Metrics]),
        route("GET", "/healthz", &[]).open(),
        route("GET", "/readyz", &[]).open(),
        route("GET", "/ui", &[]).open(),
    ];
    let mut answers = String::new();
    let mut mismatches = Vec::new();
    let mut cells = 0;
    for route in &routes {
        for caller in CALLERS {
            let token = match caller {
                Caller::Anonymous => None,
                Caller::WrongToken => Some(wrong.as_str()),
                Caller::Admin => Some(ADMIN),
                Caller::Read => Some(read.as_str()),
                Caller::Metrics => Some(metrics.as_str()),
                Caller::Alerts => Some(alerts.as_str()),
            };
            let mut req = service.http.request(route.method.parse().expect("method"), service.url(route.path));
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            if let Some(body) = &route.body {
                req = req.json(body);
            }
            let resp = req.send().await.expect("answer");
            let status = resp.status().as_u16();
            answers.push_str(&resp.text().await.unwrap_or_default());
            cells += 1;
            if class(status) != route.expected(caller) {
                mismatches.push(format!(
                    "{} {} as {caller:?}: {status}, want {}",
                    route.method,
                    route.path,
                    route.expected(caller)
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "scope matrix:\n{}", mismatches.join("\n"));

    // Customer.io webhooks are authenticated by their signature, never by a token.
    let event = json!({"event_id": "e1", "metric": "sent", "object_type": "email", "timestamp": 1}).to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs().to_string();
    for token in [ADMIN, read.as_str(), metrics.as_str(), alerts.as_str()] {
        let r = service
            .send(service.http.post(service.url("/webhooks/customerio")).bearer_auth(token).body(event.clone()))
            .await;
        assert_eq!((r.status, r.body["error"].as_str()), (401, Some("missing_signature")));
    }
    let signed = service
        .http
        .post(service.url("/webhooks/customerio"))
        .header("content-type", "application/json")
        .header("x-cio-timestamp", &now)
        .header("x-cio-signature", sign(cio.as_bytes(), &now, event.as_bytes()))
        .body(event.clone());
    let r = service.send(signed).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Failure paths log the most: Redis away for a moment (changes refused, the feed reconnecting).
    redis.stop();
    let r = service.admin_post("/flags/f/advance", json!({})).await;
    assert_eq!(r.status, 503);
    answers.push_str(&r.body.to_string());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    answers.push_str(&service.get("/readyz").await.body.to_string());
    redis.start_again();
    service.wait_ready(Duration::from_secs(5)).await;
    answers.push_str(&service.admin_get("/admin/status").await.body.to_string());
    // Give the notifier time to fail its retries (and log them).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let logs = service.logs();
    assert!(logs.contains(r#""level":"DEBUG""#), "debug logging was on");
    assert!(logs.contains("notification failed"), "a failed notification was logged");
    let mut leaked = Vec::new();
    for (what, value) in &secrets {
        if logs.contains(value.as_str()) {
            leaked.push(format!("{what} in the logs"));
        }
        if answers.contains(value.as_str()) {
            leaked.push(format!("{what} in an answer"));
        }
    }
    assert!(leaked.is_empty(), "secrets leaked: {leaked:?}");
    println!(
        "FIGURES secrets: {} log lines at debug level (dependencies included) and {} bytes of answers searched for {} secrets: none found; \
         scope matrix {cells} cells ({} routes x {} callers) as expected",
        logs.lines().count(),
        answers.len(),
        secrets.len(),
        routes.len(),
        CALLERS.len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_and_a_password_works_and_an_unknown_ca_is_refused() {
    let _timed = timed_test().await;
    let certs = tempfile::tempdir().expect("tempdir");
    let tls = make_certificates(certs.path());
    let password = secret("tls-redis-password");
    let redis = RedisServer::start_with(RedisOptions {
        password: Some(password.clone()),
        tls: Some(tls.clone()),
        ..RedisOptions::default()
    });
    assert!(redis.url().starts_with("rediss://"));
    let ca = tls.ca.to_string_lossy().into_owned();
    let a = ServiceProcess::spawn(&redis.url(), &[], &[("ROLLOUT_REDIS_CA_FILE", &ca)]).await;
    let b = ServiceProcess::spawn(&redis.url(), &["--redis-ca-file", &ca], &[]).await;
    assert_eq!(a.admin_put("/flags/tls", json!({"stages": [{"name": "all", "percent": 100}]})).await.status, 201);
    assert_eq!(a.admin_post("/flags/tls/start", json!({})).await.status, 200);
    let feed_ms =
        until_full(&b, "tls", Duration::from_secs(2), "the change did not reach B over TLS").await.as_millis();
    let doc: Option<String> =
        redis::cmd("HGET").arg("rollout:{tls}:flag").arg("doc").query(&mut redis.connection()).expect("HGET over TLS");
    assert!(doc.is_some_and(|d| d.contains("\"running\"")));

    // Without the CA the server's certificate is not trusted: the replica never becomes ready.
    let untrusting = ServiceProcess::launch(&redis.url(), &[], &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready = untrusting.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    let reason = ready.body["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");
    assert!(!reason.contains(&password) && !untrusting.logs().contains(&password), "the password leaked");
    println!(
        "FIGURES rediss: two replicas over TLS (private CA, password): a change reached the other replica in {feed_ms} ms; \
         without the CA: /readyz 503 ({reason})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_redis_cluster_works_and_its_password_never_reaches_the_debug_logs() {
    let _timed = timed_test().await;
    let password = secret("cluster-password");
    let mut cluster = RedisCluster::start_with_password(Some(password.clone()));
    let seeds = cluster.urls().join(",");
    let env = [("ROLLOUT_REDIS_CLUSTER_URLS", seeds.as_str()), ("RUST_LOG", "debug"), ("ROLLOUT_LOG_FORMAT", "json")];
    // No single Redis URL: the cluster seeds instead.
    let a = ServiceProcess::spawn("", &[], &env).await;
    let b = ServiceProcess::spawn("", &[], &env).await;
    assert_eq!(a.get("/readyz").await.body["store"], "redis-cluster");
    assert_eq!(a.admin_put("/flags/c", json!({"stages": [{"name": "all", "percent": 100}]})).await.status, 201);
    assert_eq!(a.admin_post("/flags/c/start", json!({})).await.status, 200);
    until_full(&b, "c", Duration::from_secs(5), "the change did not reach B through the cluster").await;
    // A node dies: connection errors and the feed's move to another node are logged, never the password.
    cluster.kill(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answers = [a.get("/readyz").await.body.to_string(), a.admin_get("/admin/status").await.body.to_string()];
    for (name, text) in [("A's log", a.logs()), ("B's log", b.logs()), ("answers", answers.concat())] {
        assert!(!text.is_empty(), "{name} is empty");
        assert!(!text.contains(&password), "the cluster password leaked into {name}");
    }
    assert!(a.logs().lines().count() > 20, "debug logs were captured");
    assert!(a.logs().contains("the change feed subscription was lost"), "the node's death was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_over_tls_with_a_private_ca_works_end_to_end_and_an_unknown_ca_is_refused() {
    use futures::StreamExt;
    use rollout_controller::store::{Change, FlagStore};

    let _timed = timed_test().await;
    let certs = tempfile::tempdir().expect("tempdir");
    let tls = make_certificates(certs.path());
    let mut cluster = RedisCluster::start_tls(tls.clone());
    let seeds = cluster.urls().join(",");
    assert!(seeds.starts_with("rediss://"), "{seeds}");
    let ca = tls.ca.to_string_lossy().into_owned();
    let env = [("ROLLOUT_REDIS_CLUSTER_URLS", seeds.as_str()), ("ROLLOUT_REDIS_CA_FILE", ca.as_str())];
    let a = ServiceProcess::spawn("", &[], &env).await;
    let b = ServiceProcess::spawn("", &["--redis-ca-file", &ca], &env[..1]).await;
    assert_eq!(b.get("/readyz").await.body["store"], "redis-cluster");

    // Enough flags that every node holds some: each is written over TLS to its own node, and the
    // change reaches B through a subscription that is TLS too (the nodes serve nothing else).
    let flags: Vec<String> = (0..12).map(|i| format!("tls-{i}")).collect();
    for f in &flags {
        let plan = json!({"stages": [{"name": "all", "percent": 100}]});
        assert_eq!(a.admin_put(&format!("/flags/{f}"), plan).await.status, 201);
        assert_eq!(a.admin_post(&format!("/flags/{f}/start"), json!({})).await.status, 200);
    }
    let started = Instant::now();
    for f in &flags {
        let left = Duration::from_secs(5).saturating_sub(started.elapsed());
        until_full(&b, f, left, &format!("{f} did not reach B through the TLS cluster")).await;
    }
    let feed_ms = started.elapsed().as_millis();
    for node in 0..3 {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg("rollout:*:flag").query(&mut cluster.connection(node)).expect("KEYS");
        assert!(!keys.is_empty(), "node {node} holds no flag");
    }

    // Without the CA no node's certificate is trusted: the replica never becomes ready.
    let untrusting = ServiceProcess::launch("", &[], &env[..1]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready = untrusting.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    let reason = ready.body["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");

    // The feed's node dies: its next subscription goes, over TLS, to a live node.
    let store = cluster.store();
    let mut changes = store.subscribe().await.expect("subscribe over TLS");
    cluster.kill(0);
    let ended = tokio::time::timeout(Duration::from_secs(5), changes.next()).await.expect("the stream ends in time");
    assert_eq!(ended, None, "losing the node ends the stream");
    let mut changes = store.subscribe().await.expect("subscribe through a live node over TLS");
    let change = Change { flag: "f".into(), version: 7 };
    assert!(
        cluster.published_change_arrives(2, &mut changes, &change).await,
        "the change arrives on the new TLS subscription"
    );
    println!(
        "FIGURES rediss cluster: 12 flags over 3 TLS nodes reached the other replica within {feed_ms} ms; \
         without the CA: /readyz 503 ({reason})"
    );
}
