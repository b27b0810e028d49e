//! `rollout doctor`: the runbook's production audit of a running service, one check per line.
//!
//! The service answers and is ready; it keeps state in Redis, not the embedded store; a replica
//! holds the controller lease; its tokens are configured, not generated; its notification URLs are
//! set and answer; its clock agrees with Redis `TIME`; every flag's plan is valid. The results are
//! a pure function of what `/healthz`, `/readyz` and `/admin/status` answered.

use serde::Serialize;
use serde_json::Value;

use crate::client::{AdminStatus, Client, ClientError, NotifyProbe};

/// Most a replica's clock may differ from Redis `TIME` before soak timers and metric windows disagree.
pub const MAX_CLOCK_SKEW_MS: i64 = 1000;
/// A store round trip slower than this is worth a warning.
pub const SLOW_STORE_MS: f64 = 50.0;

/// How a check came out: a `fail` fails the audit, a `warn` does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckResult {
    Pass,
    Warn,
    Fail,
}

impl CheckResult {
    fn label(self) -> &'static str {
        match self {
            CheckResult::Pass => "[PASS]",
            CheckResult::Warn => "[WARN]",
            CheckResult::Fail => "[FAIL]",
        }
    }
}

/// One line of the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub result: CheckResult,
    pub detail: String,
}

fn check(name: impl Into<String>, result: CheckResult, detail: impl Into<String>) -> Check {
    Check { check: name.into(), result, detail: detail.into() }
}

/// Runs every check against the server. Stops early when the server cannot be asked further.
pub async fn run(client: &Client) -> Vec<Check> {
    let mut checks = Vec::new();
    match client.probe("healthz").await {
        Ok((200, _)) => {
            checks.push(check("server", CheckResult::Pass, format!("{} answers /healthz", client.server())))
        }
        Ok((status, _)) => checks.push(check("server", CheckResult::Fail, format!("/healthz answered HTTP {status}"))),
        Err(e) => {
            checks.push(check("server", CheckResult::Fail, e.to_string()));
            return checks;
        }
    }
    checks.push(match client.probe("readyz").await {
        Ok((200, body)) => {
            let flags = body["flags"].as_u64().unwrap_or(0);
            check("ready", CheckResult::Pass, format!("/readyz: ready, {} in the snapshot", flags_count(flags)))
        }
        Ok((status, body)) => {
            let reason = body["reason"].as_str().map_or_else(|| format!("HTTP {status}"), str::to_owned);
            check("ready", CheckResult::Fail, format!("not ready: {reason}"))
        }
        Err(e) => check("ready", CheckResult::Fail, e.to_string()),
    });
    match client.admin_status().await {
        Ok(status) => checks.extend(status_checks(&status.data)),
        Err(e @ ClientError::Unauthorized) => checks.push(check("admin status", CheckResult::Fail, e.to_string())),
        Err(e) => checks.push(check("admin status", CheckResult::Fail, format!("GET /admin/status: {e}"))),
    }
    checks
}

/// The checks that read `/admin/status`, in the order they are printed.
pub fn status_checks(s: &AdminStatus) -> Vec<Check> {
    let mut checks = vec![store_check(s), leader_check(s), tokens_check(s), signing_keys_check(s)];
    checks.extend(notify_checks(s));
    checks.push(clock_check(s));
    checks.push(plans_check(s));
    checks
}

fn store_check(s: &AdminStatus) -> Check {
    match (s.store.as_str(), s.store_ping_ms) {
        ("memory", _) => check(
            "store",
            CheckResult::Fail,
            "embedded in-memory store: state is not shared between replicas and is lost on restart (set --redis-url)",
        ),
        (kind, Some(ms)) if ms > SLOW_STORE_MS => {
            check("store", CheckResult::Warn, format!("{kind}, slow round trip {ms:.1} ms (over {SLOW_STORE_MS} ms)"))
        }
        (kind, Some(ms)) => check("store", CheckResult::Pass, format!("{kind}, round trip {ms:.2} ms")),
        (kind, None) => check(
            "store",
            CheckResult::Fail,
            format!("{kind} does not answer: {}", s.store_error.as_deref().unwrap_or("no reply")),
        ),
    }
}

fn leader_check(s: &AdminStatus) -> Check {
    match &s.leader {
        Some(holder) if *holder == s.this_replica => {
            check("leader", CheckResult::Pass, format!("{holder} holds the controller lease (the replica asked)"))
        }
        Some(holder) => check("leader", CheckResult::Pass, format!("{holder} holds the controller lease")),
        None => check(
            "leader",
            CheckResult::Fail,
            "no replica holds the controller lease: nothing advances or rolls back automatically",
        ),
    }
}

fn tokens_check(s: &AdminStatus) -> Check {
    let counts = format!(
        "{} admin, {} read, {} metrics, {} alert",
        s.admin_tokens, s.read_tokens, s.metrics_tokens, s.alert_tokens
    );
    if s.token_generated {
        check(
            "tokens",
            CheckResult::Fail,
            "the admin token was generated at start-up and changes on every restart (set ROLLOUT_ADMIN_TOKENS)",
        )
    } else if s.read_tokens == 0 {
        check(
            "tokens",
            CheckResult::Warn,
            format!("{counts}: evaluations are open to anyone who can reach the service"),
        )
    } else {
        check("tokens", CheckResult::Pass, format!("{counts} tokens configured"))
    }
}

fn signing_keys_check(s: &AdminStatus) -> Check {
    if s.cio_signing_keys.is_empty() {
        check("signing keys", CheckResult::Warn, "no Customer.io signing key: delivery events cannot feed the guards")
    } else {
        check(
            "signing keys",
            CheckResult::Pass,
            format!("{} Customer.io signing key(s): {}", s.cio_signing_keys.len(), s.cio_signing_keys.join(", ")),
        )
    }
}

/// One check per notification URL, or one failing check when there is none.
fn notify_checks(s: &AdminStatus) -> Vec<Check> {
    if s.notify_urls.is_empty() {
        return vec![check(
            "notify",
            CheckResult::Fail,
            "no notification URLs: transitions and rollbacks reach nobody (set ROLLOUT_NOTIFY_URLS)",
        )];
    }
    let probe = |(i, url): (usize, &NotifyProbe)| {
        let name = format!("notify #{}", i + 1);
        if url.reachable {
            check(name, CheckResult::Pass, format!("{} reachable ({})", url.url_prefix, url.detail))
        } else {
            check(name, CheckResult::Fail, format!("{} unreachable: {}", url.url_prefix, url.detail))
        }
    };
    s.notify_urls.iter().enumerate().map(probe).collect()
}

fn clock_check(s: &AdminStatus) -> Check {
    let Some(store) = s.store_time_ms else {
        return if s.store == "memory" {
            check("clock", CheckResult::Warn, "no store clock to compare with (memory store)")
        } else {
            check("clock", CheckResult::Fail, "cannot read the store's TIME")
        };
    };
    let skew = s.server_time_ms - store;
    if skew.abs() <= MAX_CLOCK_SKEW_MS {
        return check("clock", CheckResult::Pass, format!("within {} ms of Redis TIME", skew.abs()));
    }
    check(
        "clock",
        CheckResult::Fail,
        format!(
            "{:.1} s {} Redis TIME: soak timers and metric windows disagree between replicas",
            skew.abs() as f64 / 1000.0,
            if skew > 0 { "ahead of" } else { "behind" }
        ),
    )
}

fn plans_check(s: &AdminStatus) -> Check {
    let invalid: Vec<String> = s
        .flags
        .iter()
        .filter(|f| !f.valid)
        .map(|f| format!("{}: {}", f.name, f.problem.as_deref().unwrap_or("invalid")))
        .collect();
    match (s.flags.len(), invalid.len()) {
        (0, _) => check("plans", CheckResult::Pass, "no flags yet"),
        (n, 0) => check("plans", CheckResult::Pass, format!("{}, every plan valid", flags_count(n as u64))),
        (n, k) => check("plans", CheckResult::Fail, format!("{k} of {n} plans invalid: {}", invalid.join("; "))),
    }
}

fn flags_count(n: u64) -> String {
    if n == 1 { "1 flag".into() } else { format!("{n} flags") }
}

/// Whether the audit passed: nothing failed (warnings allowed).
pub fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.result != CheckResult::Fail)
}

/// One `[PASS]`/`[WARN]`/`[FAIL]` line per check, then `Result: N/M passed`.
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.check.chars().count()).max().unwrap_or(0);
    let mut text = String::new();
    for c in checks {
        text.push_str(&format!("{} {:width$}  {}\n", c.result.label(), c.check, c.detail));
    }
    let ok = checks.iter().filter(|c| c.result == CheckResult::Pass).count();
    text.push_str(&format!("Result: {ok}/{} passed\n", checks.len()));
    text
}

/// The audit as JSON: `{"checks": [...], "passed", "total", "ok"}`.
pub fn to_json(checks: &[Check]) -> Value {
    serde_json::json!({
        "checks": checks,
        "passed": checks.iter().filter(|c| c.result == CheckResult::Pass).count(),
        "total": checks.len(),
        "ok": passed(checks),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::FlagCheck;

    fn healthy() -> AdminStatus {
        AdminStatus {
            store: "redis".into(),
            store_ping_ms: Some(0.4),
            store_error: None,
            leader: Some("a".into()),
            this_replica: "a".into(),
            token_generated: false,
            admin_tokens: 1,
            read_tokens: 1,
            metrics_tokens: 1,
            alert_tokens: 1,
            cio_signing_keys: vec!["whse…".into()],
            notify_urls: vec![NotifyProbe { url_prefix: "http…".into(), reachable: true, detail: "HTTP 200".into() }],
            server_time_ms: 1_000_500,
            store_time_ms: Some(1_000_000),
            flags: vec![FlagCheck { name: "f".into(), valid: true, problem: None }],
        }
    }

    fn verdicts(checks: &[Check]) -> Vec<(&str, CheckResult)> {
        checks.iter().map(|c| (c.check.as_str(), c.result)).collect()
    }

    #[test]
    fn a_healthy_production_setup_passes_every_check() {
        let checks = status_checks(&healthy());
        assert!(checks.iter().all(|c| c.result == CheckResult::Pass), "{checks:?}");
        assert!(passed(&checks));
        assert!(render(&checks).ends_with("Result: 7/7 passed\n"));
    }

    #[test]
    fn each_misconfiguration_fails_its_own_check() {
        let s = AdminStatus {
            store_ping_ms: Some(120.0),
            leader: None,
            read_tokens: 0,
            cio_signing_keys: vec![],
            notify_urls: vec![],
            server_time_ms: 1_002_500,
            flags: vec![FlagCheck { name: "f".into(), valid: false, problem: Some("stages: required".into()) }],
            ..healthy()
        };
        let checks = status_checks(&s);
        assert_eq!(
            verdicts(&checks),
            [
                ("store", CheckResult::Warn),
                ("leader", CheckResult::Fail),
                ("tokens", CheckResult::Warn),
                ("signing keys", CheckResult::Warn),
                ("notify", CheckResult::Fail),
                ("clock", CheckResult::Fail),
                ("plans", CheckResult::Fail)
            ]
        );
        assert_eq!(
            checks[5].detail,
            "2.5 s ahead of Redis TIME: soak timers and metric windows disagree between replicas"
        );
        assert_eq!(checks[6].detail, "1 of 1 plans invalid: f: stages: required");
        assert!(!passed(&checks));
        let memory = AdminStatus { store: "memory".into(), store_time_ms: None, token_generated: true, ..healthy() };
        assert_eq!(
            verdicts(&status_checks(&memory)),
            [
                ("store", CheckResult::Fail),
                ("leader", CheckResult::Pass),
                ("tokens", CheckResult::Fail),
                ("signing keys", CheckResult::Pass),
                ("notify #1", CheckResult::Pass),
                ("clock", CheckResult::Warn),
                ("plans", CheckResult::Pass)
            ]
        );
    }
}
