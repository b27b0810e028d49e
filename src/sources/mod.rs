//! Guard signal sources: parse and verify what Alertmanager and Customer.io send, query Prometheus
//! for PromQL guards (the leader's [`prometheus::Puller`] does the HTTP), and keep per-source
//! counters for `/debug/signals`. Nothing here changes rollout state.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::util::lock;

pub mod alertmanager;
pub mod customerio;
pub mod prometheus;

/// How the sources are configured (no `Debug`: it holds signing keys).
#[derive(Default)]
pub struct SourcesSettings {
    /// The alert label naming the flag (`rollout_flag` is accepted too).
    pub alert_flag_label: String,
    /// Customer.io signing keys; none = the webhook endpoint answers 404.
    pub cio_signing_keys: Vec<Vec<u8>>,
    pub cio_mapping: customerio::FlagMapping,
}

/// What one source has seen on this replica.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SourceStats {
    /// When the last payload arrived (ms since epoch), accepted or not.
    pub last_received_at: Option<i64>,
    pub received: u64,
    pub accepted: u64,
    /// Rejected payloads by reason (`bad_signature`, `stale_timestamp`, `malformed`, …).
    pub rejected: BTreeMap<String, u64>,
    /// Source-specific counts (`rollbacks`, `unknown_flag`, `duplicate`, `ignored`, …).
    pub counts: BTreeMap<String, u64>,
}

/// Per-source counters of this replica.
#[derive(Debug, Default)]
pub struct SignalStats {
    sources: Mutex<BTreeMap<&'static str, SourceStats>>,
}

impl SignalStats {
    fn with<T>(&self, source: &'static str, f: impl FnOnce(&mut SourceStats) -> T) -> T {
        let mut sources = lock(&self.sources);
        f(sources.entry(source).or_default())
    }

    pub fn received(&self, source: &'static str, now_ms: i64) {
        self.with(source, |s| {
            s.received += 1;
            s.last_received_at = Some(now_ms);
        });
    }

    pub fn accepted(&self, source: &'static str) {
        self.with(source, |s| s.accepted += 1);
    }

    pub fn rejected(&self, source: &'static str, reason: &str) {
        self.with(source, |s| *s.rejected.entry(reason.to_owned()).or_default() += 1);
    }

    pub fn count(&self, source: &'static str, what: &str, n: u64) {
        if n > 0 {
            self.with(source, |s| *s.counts.entry(what.to_owned()).or_default() += n);
        }
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, SourceStats> {
        lock(&self.sources).clone()
    }
}
