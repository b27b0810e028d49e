//! Guard signals and verdicts: windowed totals in, per-guard `ok` / `breach` / `insufficient_data` out.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A guard: a rate over a window, or a gauge's latest value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    ErrorRate,
    BounceRate,
    ComplaintRate,
    DeliveryRate,
    P99LatencyMs,
    QueueDepth,
    WebhookErrorRate,
}

impl Guard {
    pub const ALL: [Guard; 7] = [
        Guard::ErrorRate,
        Guard::BounceRate,
        Guard::ComplaintRate,
        Guard::DeliveryRate,
        Guard::P99LatencyMs,
        Guard::QueueDepth,
        Guard::WebhookErrorRate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Guard::ErrorRate => "error_rate",
            Guard::BounceRate => "bounce_rate",
            Guard::ComplaintRate => "complaint_rate",
            Guard::DeliveryRate => "delivery_rate",
            Guard::P99LatencyMs => "p99_latency_ms",
            Guard::QueueDepth => "queue_depth",
            Guard::WebhookErrorRate => "webhook_error_rate",
        }
    }

    pub fn from_name(name: &str) -> Option<Guard> {
        Guard::ALL.into_iter().find(|g| g.as_str() == name)
    }

    /// The runbook's default threshold.
    pub fn default_threshold(self) -> f64 {
        match self {
            Guard::ErrorRate => 0.01,
            Guard::BounceRate => 0.05,
            Guard::ComplaintRate => 0.001,
            Guard::DeliveryRate => 0.95,
            Guard::P99LatencyMs => 5000.0,
            Guard::QueueDepth => 10_000.0,
            Guard::WebhookErrorRate => 0.05,
        }
    }

    /// Delivery rate breaches when it falls below its threshold; everything else when above.
    pub fn breaches_below(self) -> bool {
        self == Guard::DeliveryRate
    }

    /// Gauges take the latest value in the window instead of a ratio.
    pub fn is_gauge(self) -> bool {
        matches!(self, Guard::P99LatencyMs | Guard::QueueDepth)
    }

    /// What the samples of a rate are counted in (its denominator).
    pub fn sample_unit(self) -> &'static str {
        match self {
            Guard::ErrorRate => "requests",
            Guard::BounceRate | Guard::DeliveryRate => "sent",
            Guard::ComplaintRate => "delivered",
            Guard::WebhookErrorRate => "webhooks",
            Guard::P99LatencyMs | Guard::QueueDepth => "reports",
        }
    }
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-guard threshold overrides: a number replaces the default, `null` turns the guard off.
pub type ThresholdOverrides = BTreeMap<Guard, Option<f64>>;

/// Counters and gauges pushed by app services (and fed by signal sources).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricSample {
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub sent: u64,
    #[serde(default)]
    pub delivered: u64,
    #[serde(default)]
    pub bounced: u64,
    #[serde(default)]
    pub complaints: u64,
    #[serde(default)]
    pub webhooks: u64,
    #[serde(default)]
    pub webhook_errors: u64,
    #[serde(default)]
    pub p99_latency_ms: Option<f64>,
    #[serde(default)]
    pub queue_depth: Option<f64>,
}

/// Largest counter accepted in one push.
pub const MAX_COUNTER: u64 = 1_000_000_000;
/// Largest gauge value accepted.
pub const MAX_GAUGE: f64 = 1e12;

impl MetricSample {
    pub const COUNTERS: [&'static str; 8] =
        ["requests", "errors", "sent", "delivered", "bounced", "complaints", "webhooks", "webhook_errors"];

    pub fn counters(&self) -> [(&'static str, u64); 8] {
        [
            ("requests", self.requests),
            ("errors", self.errors),
            ("sent", self.sent),
            ("delivered", self.delivered),
            ("bounced", self.bounced),
            ("complaints", self.complaints),
            ("webhooks", self.webhooks),
            ("webhook_errors", self.webhook_errors),
        ]
    }

    pub fn gauges(&self) -> [(&'static str, Option<f64>); 2] {
        [("p99_latency_ms", self.p99_latency_ms), ("queue_depth", self.queue_depth)]
    }

    /// Non-negative, finite and bounded; at least one value.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in self.counters() {
            if value > MAX_COUNTER {
                return Err(format!("{name}: at most {MAX_COUNTER} per push"));
            }
        }
        for (name, value) in self.gauges() {
            if let Some(v) = value
                && (!v.is_finite() || !(0.0..=MAX_GAUGE).contains(&v))
            {
                return Err(format!("{name}: must be a finite number between 0 and {MAX_GAUGE}"));
            }
        }
        if self.counters().iter().all(|(_, v)| *v == 0) && self.gauges().iter().all(|(_, v)| v.is_none()) {
            return Err("no metric given: send at least one counter or gauge".into());
        }
        Ok(())
    }
}

/// Where a stage's metrics are counted: one series per stage entry (`id`), so a window never mixes
/// in data from before the current stage. Its buckets keep the length they had when the stage was
/// entered: a window edited mid-stage only changes how far back a read looks, never which
/// buckets hold the stage's data (a widened window sees what the old one still kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSeries {
    pub id: String,
    pub bucket_ms: i64,
    pub ttl_secs: u64,
}

/// The shortest metric bucket.
pub const MIN_BUCKET_MS: i64 = 5000;

/// The bucket length for a window: about 60 buckets per window, never shorter than 5 s.
pub fn bucket_ms_for(window_secs: u64) -> i64 {
    let window_ms = i64::try_from(window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    (window_ms / 60).max(MIN_BUCKET_MS)
}

impl MetricSeries {
    /// Buckets of `bucket_ms` (never shorter than 5 s), each kept for a window of `window_secs`
    /// plus two buckets.
    pub fn new(id: String, bucket_ms: i64, window_secs: u64) -> Self {
        let bucket_ms = bucket_ms.max(MIN_BUCKET_MS);
        let ttl_secs = window_secs.saturating_add(2 * u64::try_from(bucket_ms / 1000).unwrap_or(0));
        Self { id, bucket_ms, ttl_secs }
    }

    pub fn bucket_of(&self, at_ms: i64) -> i64 {
        at_ms.div_euclid(self.bucket_ms)
    }
}

/// Totals over a window: counters summed, gauges at their latest value with their report counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowTotals {
    pub requests: u64,
    pub errors: u64,
    pub sent: u64,
    pub delivered: u64,
    pub bounced: u64,
    pub complaints: u64,
    pub webhooks: u64,
    pub webhook_errors: u64,
    pub p99_latency_ms: Option<f64>,
    pub p99_latency_reports: u64,
    pub queue_depth: Option<f64>,
    pub queue_depth_reports: u64,
    /// Values pulled from Prometheus, per guard: the latest read (`None` when it failed) and how many.
    pub pulled: BTreeMap<Guard, PulledReading>,
}

/// A guard's readings pulled from a query: the latest value (`None`: empty, NaN or failed) and the count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PulledReading {
    pub latest: Option<f64>,
    pub reads: u64,
}

impl WindowTotals {
    /// Adds the totals of a later stretch of the window: counters add up, a gauge the later
    /// stretch reported replaces the earlier one. Summing buckets one by one or merging their
    /// per-bucket totals in order gives the same window.
    pub fn merge(&mut self, later: &WindowTotals) {
        self.requests += later.requests;
        self.errors += later.errors;
        self.sent += later.sent;
        self.delivered += later.delivered;
        self.bounced += later.bounced;
        self.complaints += later.complaints;
        self.webhooks += later.webhooks;
        self.webhook_errors += later.webhook_errors;
        if later.p99_latency_ms.is_some() {
            self.p99_latency_ms = later.p99_latency_ms;
        }
        self.p99_latency_reports += later.p99_latency_reports;
        if later.queue_depth.is_some() {
            self.queue_depth = later.queue_depth;
        }
        self.queue_depth_reports += later.queue_depth_reports;
        for (guard, reading) in &later.pulled {
            let merged = self.pulled.entry(*guard).or_default();
            // A read that failed replaces an earlier value too: the latest read is what counts.
            merged.latest = reading.latest;
            merged.reads += reading.reads;
        }
    }

    /// `(value, samples)` of a guard; the value is `None` without samples.
    pub fn measure(&self, guard: Guard) -> (Option<f64>, u64) {
        let ratio = |num: u64, den: u64| ((den > 0).then(|| num as f64 / den as f64), den);
        match guard {
            Guard::ErrorRate => ratio(self.errors, self.requests),
            Guard::BounceRate => ratio(self.bounced, self.sent),
            Guard::ComplaintRate => ratio(self.complaints, self.delivered),
            Guard::DeliveryRate => ratio(self.delivered, self.sent),
            Guard::WebhookErrorRate => ratio(self.webhook_errors, self.webhooks),
            Guard::P99LatencyMs => (self.p99_latency_ms, self.p99_latency_reports),
            Guard::QueueDepth => (self.queue_depth, self.queue_depth_reports),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Breach,
    InsufficientData,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Breach => "breach",
            Verdict::InsufficientData => "insufficient_data",
        }
    }
}

/// One guard's reading.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GuardReading {
    pub guard: Guard,
    pub value: Option<f64>,
    pub threshold: f64,
    pub samples: u64,
    pub min_samples: u64,
    pub verdict: Verdict,
    /// Where the value comes from: `push` (counters and gauges) or `prometheus` (a query).
    pub source: &'static str,
}

impl GuardReading {
    /// `error_rate 0.034 > 0.01 over 1204 requests`
    pub fn describe(&self) -> String {
        let op = match (self.verdict, self.guard.breaches_below()) {
            (Verdict::Breach, true) => "<",
            (Verdict::Breach, false) => ">",
            (_, true) => ">=",
            (_, false) => "<=",
        };
        match self.value {
            Some(v) => format!(
                "{} {} {op} {} over {} {}",
                self.guard,
                round(v),
                round(self.threshold),
                self.samples,
                if self.source == "prometheus" { "queries" } else { self.guard.sample_unit() }
            ),
            None => format!("{} no data", self.guard),
        }
    }
}

fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// The readings of every active guard and the overall verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub verdict: Verdict,
    pub guards: Vec<GuardReading>,
}

impl Health {
    pub fn breaches(&self) -> impl Iterator<Item = &GuardReading> {
        self.guards.iter().filter(|g| g.verdict == Verdict::Breach)
    }

    /// Why the verdict is what it is, in one line.
    pub fn summary(&self) -> String {
        let pick: Vec<String> = match self.verdict {
            Verdict::Breach => self.breaches().map(GuardReading::describe).collect(),
            Verdict::Ok => {
                self.guards.iter().filter(|g| g.verdict == Verdict::Ok).map(GuardReading::describe).collect()
            }
            Verdict::InsufficientData => return "not enough guard data".into(),
        };
        pick.join("; ")
    }
}

/// How a rollout's guards are configured (per flag, with per-stage overrides).
pub struct GuardConfig<'a> {
    pub flag_thresholds: &'a ThresholdOverrides,
    pub stage_thresholds: &'a ThresholdOverrides,
    pub min_samples: u64,
    /// Guards fed by a Prometheus query instead of pushed counters.
    pub pulled: Vec<Guard>,
}

impl GuardConfig<'_> {
    /// The threshold in force for a guard, `None` when turned off.
    pub fn threshold(&self, guard: Guard) -> Option<f64> {
        match self.stage_thresholds.get(&guard).or_else(|| self.flag_thresholds.get(&guard)) {
            Some(set) => *set,
            None => Some(guard.default_threshold()),
        }
    }
}

/// Judges the window. A rate needs `min_samples` of its denominator, a gauge one report, a pulled
/// guard one successful read as its latest (a failed, empty or NaN read is `insufficient_data`).
///
/// Overall: `breach` when any guard breaches; `ok` when at least one guard has enough data and
/// is ok and no guard is part-way to its minimum; `insufficient_data` otherwise. Guards with no
/// data at all (a signal this service never sends) do not hold the rollout.
pub fn assess(config: &GuardConfig<'_>, totals: &WindowTotals) -> Health {
    let mut guards = Vec::new();
    for guard in Guard::ALL {
        let Some(threshold) = config.threshold(guard) else { continue };
        let (value, samples, min_samples, source) = if config.pulled.contains(&guard) {
            let reading = totals.pulled.get(&guard).copied().unwrap_or_default();
            (reading.latest, reading.reads, 1, "prometheus")
        } else {
            let (value, samples) = totals.measure(guard);
            (value, samples, if guard.is_gauge() { 1 } else { config.min_samples.max(1) }, "push")
        };
        let verdict = match value {
            Some(v) if samples >= min_samples => {
                let breach = if guard.breaches_below() { v < threshold } else { v > threshold };
                if breach { Verdict::Breach } else { Verdict::Ok }
            }
            _ => Verdict::InsufficientData,
        };
        guards.push(GuardReading { guard, value, threshold, samples, min_samples, verdict, source });
    }
    let any = |v: Verdict| guards.iter().any(|g| g.verdict == v);
    let partial = guards.iter().any(|g| g.verdict == Verdict::InsufficientData && g.samples > 0);
    let verdict = if any(Verdict::Breach) {
        Verdict::Breach
    } else if any(Verdict::Ok) && !partial {
        Verdict::Ok
    } else {
        Verdict::InsufficientData
    };
    Health { verdict, guards }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(totals: WindowTotals) -> Health {
        let none = ThresholdOverrides::new();
        assess(
            &GuardConfig { flag_thresholds: &none, stage_thresholds: &none, min_samples: 100, pulled: vec![] },
            &totals,
        )
    }

    fn verdict_of(h: &Health, g: Guard) -> Verdict {
        h.guards.iter().find(|r| r.guard == g).map(|r| r.verdict).expect("guard present")
    }

    #[test]
    fn error_rate_breach_is_described_like_the_runbook() {
        let h = health(WindowTotals { requests: 1204, errors: 41, ..Default::default() });
        assert_eq!(h.verdict, Verdict::Breach);
        assert_eq!(h.summary(), "error_rate 0.0341 > 0.01 over 1204 requests");
    }

    #[test]
    fn each_default_threshold_breaches_on_its_side() {
        let cases = [
            (WindowTotals { requests: 500, errors: 10, ..Default::default() }, Guard::ErrorRate),
            (WindowTotals { sent: 200, bounced: 12, delivered: 195, ..Default::default() }, Guard::BounceRate),
            (WindowTotals { sent: 2000, delivered: 1990, complaints: 3, ..Default::default() }, Guard::ComplaintRate),
            (WindowTotals { sent: 200, delivered: 180, ..Default::default() }, Guard::DeliveryRate),
            (
                WindowTotals { p99_latency_ms: Some(5001.0), p99_latency_reports: 1, ..Default::default() },
                Guard::P99LatencyMs,
            ),
            (
                WindowTotals { queue_depth: Some(10_001.0), queue_depth_reports: 3, ..Default::default() },
                Guard::QueueDepth,
            ),
            (WindowTotals { webhooks: 100, webhook_errors: 6, ..Default::default() }, Guard::WebhookErrorRate),
        ];
        for (totals, guard) in cases {
            let h = health(totals);
            assert_eq!(verdict_of(&h, guard), Verdict::Breach, "{guard}");
            assert_eq!(h.verdict, Verdict::Breach);
        }
    }

    #[test]
    fn healthy_values_are_ok_and_silent_guards_do_not_hold() {
        let h = health(WindowTotals { requests: 1000, errors: 10, ..Default::default() });
        assert_eq!(verdict_of(&h, Guard::ErrorRate), Verdict::Ok, "exactly at the threshold is not a breach");
        assert_eq!(verdict_of(&h, Guard::BounceRate), Verdict::InsufficientData);
        assert_eq!(h.verdict, Verdict::Ok);
        let h = health(WindowTotals { sent: 200, delivered: 196, bounced: 2, ..Default::default() });
        assert_eq!(h.verdict, Verdict::Ok);
    }

    #[test]
    fn below_minimum_samples_is_insufficient_and_holds() {
        let h = health(WindowTotals { requests: 99, errors: 50, ..Default::default() });
        assert_eq!(h.verdict, Verdict::InsufficientData);
        let h = health(WindowTotals::default());
        assert_eq!(h.verdict, Verdict::InsufficientData);
        // A signal part-way to its minimum holds even when another guard is ok.
        let h = health(WindowTotals { requests: 1000, sent: 20, delivered: 20, ..Default::default() });
        assert_eq!(h.verdict, Verdict::InsufficientData);
    }

    #[test]
    fn stage_overrides_win_over_flag_overrides_and_null_turns_a_guard_off() {
        let flag: ThresholdOverrides = [(Guard::ErrorRate, Some(0.05)), (Guard::QueueDepth, None)].into();
        let stage: ThresholdOverrides = [(Guard::ErrorRate, Some(0.001))].into();
        let config = GuardConfig { flag_thresholds: &flag, stage_thresholds: &stage, min_samples: 10, pulled: vec![] };
        assert_eq!(config.threshold(Guard::ErrorRate), Some(0.001));
        assert_eq!(config.threshold(Guard::QueueDepth), None);
        assert_eq!(config.threshold(Guard::BounceRate), Some(0.05));
        let h = assess(
            &config,
            &WindowTotals {
                requests: 10,
                errors: 1,
                queue_depth: Some(1e9),
                queue_depth_reports: 1,
                ..Default::default()
            },
        );
        assert!(h.guards.iter().all(|g| g.guard != Guard::QueueDepth));
        assert_eq!(h.verdict, Verdict::Breach);
    }

    #[test]
    fn pulled_guards_use_their_latest_read_and_a_failed_read_holds() {
        let none = ThresholdOverrides::new();
        let config = GuardConfig {
            flag_thresholds: &none,
            stage_thresholds: &none,
            min_samples: 100,
            pulled: vec![Guard::ErrorRate],
        };
        let mut totals = WindowTotals { requests: 10_000, errors: 0, ..Default::default() };
        totals.pulled.insert(Guard::ErrorRate, PulledReading { latest: Some(0.2), reads: 3 });
        let h = assess(&config, &totals);
        assert_eq!(h.verdict, Verdict::Breach, "the query wins over pushed counters");
        assert_eq!(h.summary(), "error_rate 0.2 > 0.01 over 3 queries");
        totals.pulled.insert(Guard::ErrorRate, PulledReading { latest: None, reads: 4 });
        assert_eq!(assess(&config, &totals).verdict, Verdict::InsufficientData);
    }

    #[test]
    fn samples_are_validated() {
        assert!(MetricSample { requests: 1, ..Default::default() }.validate().is_ok());
        assert!(MetricSample::default().validate().is_err());
        assert!(MetricSample { requests: MAX_COUNTER + 1, ..Default::default() }.validate().is_err());
        assert!(MetricSample { p99_latency_ms: Some(-1.0), ..Default::default() }.validate().is_err());
        assert!(MetricSample { queue_depth: Some(f64::INFINITY), ..Default::default() }.validate().is_err());
    }
}
