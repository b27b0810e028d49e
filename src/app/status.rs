//! What this replica says about itself: the status report `rollout doctor` audits (the store and
//! its latency, the leader, tokens, notification receivers, clocks and plans; a secret never
//! appears beyond its first 4 characters), readiness, and its Prometheus metrics.

use std::time::Instant;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::App;
use crate::notify;

/// How this replica was set up, as far as the status report needs it.
pub struct OpsInfo {
    /// This replica's name in the controller lease.
    pub replica: String,
    /// No admin token was configured: the process made one up at start (it changes on restart).
    pub token_generated: bool,
    pub admin_tokens: usize,
    pub read_tokens: usize,
    pub metrics_tokens: usize,
    pub alert_tokens: usize,
    /// Customer.io signing keys, shown only by their first 4 characters.
    pub cio_signing_keys: Vec<SecretString>,
    pub notify_urls: Vec<SecretString>,
    /// Probes the notification URLs (built once, short timeouts).
    pub probe: reqwest::Client,
}

/// `GET /admin/status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusReply<'a> {
    /// `redis`, `redis-cluster` or `memory`.
    store: &'static str,
    /// One PING round trip; `None` when it failed.
    store_ping_ms: Option<f64>,
    store_error: Option<String>,
    /// Who holds the controller lease.
    leader: Option<String>,
    this_replica: &'a str,
    token_generated: bool,
    admin_tokens: usize,
    read_tokens: usize,
    metrics_tokens: usize,
    alert_tokens: usize,
    /// First 4 characters of each Customer.io signing key.
    cio_signing_keys: Vec<String>,
    notify_urls: Vec<NotifyProbe>,
    /// The clock rollouts run on (soak timers), read around the store's `TIME`.
    server_time_ms: i64,
    /// Redis `TIME`; `None` for the memory store or when it failed.
    store_time_ms: Option<i64>,
    flags: Vec<FlagCheck>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct NotifyProbe {
    url_prefix: String,
    reachable: bool,
    detail: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct FlagCheck {
    name: String,
    valid: bool,
    problem: Option<String>,
}

/// Whether this replica can serve: the store answers and the snapshot is fresh.
pub struct Readiness {
    /// `redis`, `redis-cluster` or `memory`.
    pub store: &'static str,
    /// Flags in this replica's snapshot.
    pub flags: usize,
    /// Why it is degraded; `None` when ready.
    pub degraded: Option<String>,
}

/// The first 4 characters of a secret, and an ellipsis.
fn prefix(secret: &str) -> String {
    let mut shown: String = secret.chars().take(4).collect();
    shown.push('…');
    shown
}

async fn probe(client: &reqwest::Client, url: &SecretString) -> NotifyProbe {
    let (reachable, detail) = match notify::probe(client, url.expose_secret()).await {
        Ok(status) => (true, format!("answered HTTP {status}")),
        Err(why) => (false, why.to_owned()),
    };
    NotifyProbe { url_prefix: prefix(url.expose_secret()), reachable, detail }
}

impl App {
    /// The status report: the store's checks and the notification probes run at once.
    pub async fn status(&self) -> StatusReply<'_> {
        let ops = &self.ops;
        let store_checks = async {
            let started = Instant::now();
            let ping = self.store.ping().await;
            let ping_ms = started.elapsed().as_secs_f64() * 1000.0;
            let leader = self.store.leader().await;
            let before = self.clock.now_ms();
            let store_time = self.store.time_ms().await;
            let after = self.clock.now_ms();
            (ping.map(|()| ping_ms), leader, before + (after - before) / 2, store_time)
        };
        let probes = futures::future::join_all(ops.notify_urls.iter().map(|url| probe(&ops.probe, url)));
        let ((ping, leader, server_time_ms, store_time), notify_urls) = tokio::join!(store_checks, probes);
        StatusReply {
            store: self.store.kind(),
            store_ping_ms: ping.as_ref().ok().copied(),
            store_error: ping.as_ref().err().map(ToString::to_string),
            leader: leader.ok().flatten(),
            this_replica: &ops.replica,
            token_generated: ops.token_generated,
            admin_tokens: ops.admin_tokens,
            read_tokens: ops.read_tokens,
            metrics_tokens: ops.metrics_tokens,
            alert_tokens: ops.alert_tokens,
            cio_signing_keys: ops.cio_signing_keys.iter().map(|k| prefix(k.expose_secret())).collect(),
            notify_urls,
            server_time_ms,
            store_time_ms: store_time.ok().flatten(),
            flags: self.flag_checks(),
        }
    }

    /// Every flag's definition, validated again (a plan written by an older version may fail today's rules).
    fn flag_checks(&self) -> Vec<FlagCheck> {
        let check = |view: &std::sync::Arc<crate::snapshot::FlagView>| {
            let problem = view.flag.definition.validate().err().map(|e| e.to_string());
            FlagCheck { name: view.flag.name.clone(), valid: problem.is_none(), problem }
        };
        self.snapshot.all().iter().map(check).collect()
    }

    /// Whether this replica can serve: the store answered the feed lately and the snapshot is
    /// younger than the readiness limit.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            store: self.store.kind(),
            flags: self.snapshot.len(),
            degraded: self.snapshot.readiness(self.max_snapshot_age).err(),
        }
    }

    /// This replica's metrics in Prometheus's text format.
    pub fn metrics_text(&self) -> String {
        self.telemetry.render(&self.snapshot, self.stream_stats())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_show_only_their_first_four_characters() {
        assert_eq!(prefix("https://hooks.slack.com/services/T0/B0/secret"), "http…");
        assert_eq!(prefix("ab"), "ab…");
        assert_eq!(prefix("ünïcødé"), "ünïc…");
    }
}
