//! Guard signals and verdicts: windowed totals in, per-guard `ok` / `breach` / `inconclusive` /
//! `insufficient_data` out, each with the evidence it rests on.
//!
//! Rates are judged by default with a confidence sequence ([`super::evidence`]): `breach` when the
//! whole interval is on the bad side of the threshold, `ok` when it is on the good side, otherwise
//! `inconclusive`. Gauges breach after `breach_reports` consecutive reports over the threshold.
//! A guard may also compare the treatment cohort with the control cohort, and the request counts
//! of the two cohorts are checked against the share the flag serves (sample-ratio mismatch).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::evidence::{self, Counts, Interval};

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
    /// Whose outcomes these are: the users the flag enabled (the default) or the others.
    #[serde(default)]
    pub cohort: Cohort,
}

/// The two groups of users a flag splits: `treatment` (answered `enabled: true`) and `control`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cohort {
    #[default]
    Treatment,
    Control,
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
    (super::secs_to_ms(window_secs) / 60).max(MIN_BUCKET_MS)
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

    /// The series of one cohort of this stage entry: the treatment keeps the stage's own id (so
    /// pushes that name no cohort land where they always did), the control gets its own.
    pub fn of(&self, cohort: Cohort) -> MetricSeries {
        match cohort {
            Cohort::Treatment => self.clone(),
            Cohort::Control => MetricSeries { id: format!("{}:control", self.id), ..self.clone() },
        }
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
    /// The latest value of each of the last [`RECENT_REPORTS`] buckets that had a report, oldest
    /// first (reports within one bucket count as its latest): what `breach_reports` looks at.
    #[serde(default)]
    pub p99_latency_recent: Vec<f64>,
    #[serde(default)]
    pub queue_depth_recent: Vec<f64>,
    /// Values pulled from Prometheus, per guard: the latest read (`None` when it failed) and how many.
    pub pulled: BTreeMap<Guard, PulledReading>,
}

/// How many recent gauge reports a window keeps (the most `breach_reports` may ask for).
pub const RECENT_REPORTS: usize = 16;

/// Appends a bucket's gauge value, keeping the last [`RECENT_REPORTS`].
pub fn push_recent(recent: &mut Vec<f64>, values: &[f64]) {
    recent.extend_from_slice(values);
    if recent.len() > RECENT_REPORTS {
        recent.drain(..recent.len() - RECENT_REPORTS);
    }
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
        push_recent(&mut self.p99_latency_recent, &later.p99_latency_recent);
        push_recent(&mut self.queue_depth_recent, &later.queue_depth_recent);
        for (guard, reading) in &later.pulled {
            let merged = self.pulled.entry(*guard).or_default();
            // A read that failed replaces an earlier value too: the latest read is what counts.
            merged.latest = reading.latest;
            merged.reads += reading.reads;
        }
    }

    /// `(value, samples)` of a guard; the value is `None` without samples.
    pub fn measure(&self, guard: Guard) -> (Option<f64>, u64) {
        match guard {
            Guard::P99LatencyMs => (self.p99_latency_ms, self.p99_latency_reports),
            Guard::QueueDepth => (self.queue_depth, self.queue_depth_reports),
            rate => {
                let counts = self.counts(rate);
                (counts.rate(), counts.trials)
            }
        }
    }

    /// A rate's events over its denominator (zero for a gauge).
    pub fn counts(&self, guard: Guard) -> Counts {
        let (events, trials) = match guard {
            Guard::ErrorRate => (self.errors, self.requests),
            Guard::BounceRate => (self.bounced, self.sent),
            Guard::ComplaintRate => (self.complaints, self.delivered),
            // More delivered than sent (events out of order) is capped at every send delivered.
            Guard::DeliveryRate => (self.delivered.min(self.sent), self.sent),
            Guard::WebhookErrorRate => (self.webhook_errors, self.webhooks),
            Guard::P99LatencyMs | Guard::QueueDepth => (0, 0),
        };
        Counts { events: events.min(trials), trials }
    }

    /// A gauge's recent per-bucket values, oldest first (empty for a rate).
    pub fn recent(&self, guard: Guard) -> &[f64] {
        match guard {
            Guard::P99LatencyMs => &self.p99_latency_recent,
            Guard::QueueDepth => &self.queue_depth_recent,
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Breach,
    /// Enough samples, but the interval still straddles the threshold: hold, neither advance nor
    /// roll back.
    Inconclusive,
    InsufficientData,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Breach => "breach",
            Verdict::Inconclusive => "inconclusive",
            Verdict::InsufficientData => "insufficient_data",
        }
    }
}

/// How rates are judged against their thresholds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// A confidence sequence of the rate must lie wholly on one side of the threshold.
    #[default]
    Sequential,
    /// The runbook's literal reading: the point estimate against the threshold.
    Threshold,
}

/// The rule that produced a guard's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// Beta-binomial mixture confidence sequence of the rate.
    BetaBinomialSequence,
    /// Point estimate against the threshold (`"decision": "threshold"`).
    PointEstimate,
    /// A gauge: `breach_reports` consecutive reports over the threshold.
    ConsecutiveReports,
    /// A value pulled from Prometheus: its latest read against the threshold.
    LatestQuery,
}

/// Treatment against control for one rate: how much worse the treatment may be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareRule {
    /// Absolute margin: breach when treatment − control exceeds it with confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
    /// Relative margin: breach when treatment exceeds control × (1 + this) with confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_relative_increase: Option<f64>,
}

/// Per-guard comparisons with the control cohort.
pub type CompareRules = BTreeMap<Guard, CompareRule>;

/// A guard's comparison of the treatment cohort with the control cohort.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Comparison {
    pub treatment: Option<f64>,
    pub treatment_samples: u64,
    pub control: Option<f64>,
    pub control_samples: u64,
    /// Treatment − control.
    pub difference: Option<f64>,
    /// Confidence sequence of `treatment − (1 + relative) × control − absolute`: above 0 the
    /// treatment is worse than the margin allows, below 0 it is within it.
    pub excess_interval: Option<Interval>,
    pub margin: CompareRule,
    pub verdict: Verdict,
}

/// One guard's reading.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GuardReading {
    pub guard: Guard,
    pub value: Option<f64>,
    /// The confidence sequence of a rate judged by [`Test::BetaBinomialSequence`].
    pub interval: Option<Interval>,
    pub threshold: Option<f64>,
    pub samples: u64,
    pub min_samples: u64,
    pub confidence: f64,
    pub test: Test,
    pub verdict: Verdict,
    /// Where the value comes from: `push` (counters and gauges) or `prometheus` (a query).
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
}

impl GuardReading {
    /// `error_rate 0.034 [0.021, 0.052] > 0.01 at 95% over 1204 requests`, or for a comparison
    /// `error_rate treatment 0.031 vs control 0.010 over 1204/9876 requests: excess [0.012, 0.029] > 0 at 95%`.
    pub fn describe(&self) -> String {
        if let Some(c) = self.comparison.as_ref().filter(|c| self.verdict == c.verdict) {
            return self.describe_comparison(c);
        }
        let Some(v) = self.value else { return format!("{} no data", self.guard) };
        let op = op_for(self.verdict, self.guard.breaches_below());
        let unit = if self.source == "prometheus" { "queries" } else { self.guard.sample_unit() };
        let threshold = self.threshold.map_or_else(|| "off".to_owned(), |t| round(t).to_string());
        match self.interval {
            Some(i) => format!(
                "{} {} [{}, {}] {op} {threshold} at {} over {} {unit}",
                self.guard,
                round(v),
                round(i.lower),
                round(i.upper),
                percent(self.confidence),
                self.samples
            ),
            None => format!("{} {} {op} {threshold} over {} {unit}", self.guard, round(v), self.samples),
        }
    }

    fn describe_comparison(&self, c: &Comparison) -> String {
        let value = |v: Option<f64>| v.map_or_else(|| "none".to_owned(), |v| round(v).to_string());
        let excess = c.excess_interval.map_or_else(
            || "no interval".to_owned(),
            |i| format!("excess [{}, {}] {} 0", round(i.lower), round(i.upper), op_for(c.verdict, false)),
        );
        format!(
            "{} treatment {} vs control {} over {}/{} {}: {excess} at {}",
            self.guard,
            value(c.treatment),
            value(c.control),
            c.treatment_samples,
            c.control_samples,
            self.guard.sample_unit(),
            percent(self.confidence)
        )
    }
}

fn op_for(verdict: Verdict, breaches_below: bool) -> &'static str {
    match (verdict, breaches_below) {
        (Verdict::Breach, true) => "<",
        (Verdict::Breach, false) => ">",
        (Verdict::Inconclusive, _) => "~",
        (_, true) => ">=",
        (_, false) => "<=",
    }
}

fn percent(confidence: f64) -> String {
    format!("{}%", (confidence * 1000.0).round() / 10.0)
}

/// Four decimals: how guard values read in audit reasons, the CLI's tables and the report.
pub fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// The treatment's share of requests against the share the flag serves.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SampleRatio {
    pub treatment_requests: u64,
    pub control_requests: u64,
    pub observed_share: f64,
    pub expected_share: f64,
    /// True when the shares differ at p < 0.001 (sequentially valid).
    pub mismatch: bool,
}

impl SampleRatio {
    /// `sample_ratio_mismatch: treatment 31% of requests, expected 10%`
    pub fn describe(&self) -> String {
        format!(
            "sample_ratio_mismatch: treatment {}% of requests, expected {}% (over {} requests)",
            (self.observed_share * 1000.0).round() / 10.0,
            (self.expected_share * 1000.0).round() / 10.0,
            self.treatment_requests + self.control_requests
        )
    }
}

/// The readings of every active guard and the overall verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub verdict: Verdict,
    pub guards: Vec<GuardReading>,
    /// Present when both cohorts reported requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_ratio: Option<SampleRatio>,
}

impl Health {
    pub fn breaches(&self) -> impl Iterator<Item = &GuardReading> {
        self.guards.iter().filter(|g| g.verdict == Verdict::Breach)
    }

    /// The guards whose interval still straddles their threshold.
    pub fn inconclusive(&self) -> impl Iterator<Item = &GuardReading> {
        self.guards.iter().filter(|g| g.verdict == Verdict::Inconclusive)
    }

    /// Why the verdict is what it is, in one line.
    pub fn summary(&self) -> String {
        let pick: Vec<String> = match self.verdict {
            Verdict::Breach => self.breaches().map(GuardReading::describe).collect(),
            Verdict::Ok => {
                self.guards.iter().filter(|g| g.verdict == Verdict::Ok).map(GuardReading::describe).collect()
            }
            Verdict::Inconclusive => self.inconclusive().map(GuardReading::describe).collect(),
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
    pub decision: Decision,
    pub confidence: f64,
    /// Consecutive reports over the threshold before a gauge breaches.
    pub breach_reports: u64,
    pub compare: &'a CompareRules,
    /// The share of users the stage serves (0–1), for the sample-ratio check; `None` skips it.
    pub expected_share: Option<f64>,
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

/// One guard in a [`HealthPoint`]: what the chart of the stage draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GuardPoint {
    pub guard: Guard,
    pub value: Option<f64>,
    /// The rate's confidence interval, when it has one.
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub threshold: Option<f64>,
    pub verdict: Verdict,
    pub samples: u64,
    /// The control cohort's value, when the guard compares cohorts and control reported.
    pub control_value: Option<f64>,
}

impl From<&GuardReading> for GuardPoint {
    fn from(r: &GuardReading) -> Self {
        Self {
            guard: r.guard,
            value: r.value,
            low: r.interval.map(|i| i.lower),
            high: r.interval.map(|i| i.upper),
            threshold: r.threshold,
            verdict: r.verdict,
            samples: r.samples,
            control_value: r.comparison.as_ref().and_then(|c| c.control),
        }
    }
}

/// The guards of one stage as the leader judged them at `at` (ms): one point of the stage's
/// guard history. `stage_version` names the stage entry it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthPoint {
    pub at: i64,
    pub stage: String,
    pub stage_entered_at: i64,
    pub stage_version: u64,
    pub guards: Vec<GuardPoint>,
}

impl HealthPoint {
    /// `health` of `flag`'s current stage, judged at `now_ms`.
    pub fn of(flag: &super::rollout::Flag, health: &Health, now_ms: i64) -> Self {
        Self {
            at: now_ms,
            stage: flag.stage_name().to_owned(),
            stage_entered_at: flag.state.stage_entered_at,
            stage_version: flag.state.stage_version,
            guards: health.guards.iter().map(GuardPoint::from).collect(),
        }
    }
}

/// A stage's windows of the two cohorts: `treatment` (users the flag enabled, and every push
/// that names no cohort) and `control` (users it did not).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cohorts {
    pub treatment: WindowTotals,
    pub control: WindowTotals,
}

/// Judges the window. A rate needs `min_samples` of its denominator, a gauge one report, a pulled
/// guard one successful read as its latest (a failed, empty or NaN read is `insufficient_data`).
///
/// Overall: `breach` when any guard breaches (on its threshold or against control);
/// `inconclusive` when any guard with enough data is still undecided; `ok` when at least one guard
/// has enough data and is ok and no guard is part-way to its minimum; `insufficient_data`
/// otherwise. Guards with no data at all (a signal this service never sends) do not hold the rollout.
pub fn assess(config: &GuardConfig<'_>, windows: &Cohorts) -> Health {
    let mut guards = Vec::new();
    for guard in Guard::ALL {
        let threshold = config.threshold(guard);
        let rule = config.compare.get(&guard).filter(|_| !guard.is_gauge() && !config.pulled.contains(&guard));
        if threshold.is_none() && rule.is_none() {
            continue;
        }
        let mut reading = if config.pulled.contains(&guard) {
            judge_pulled(guard, threshold, &windows.treatment, config)
        } else if guard.is_gauge() {
            judge_gauge(guard, threshold, &windows.treatment, config)
        } else {
            judge_rate(guard, threshold, &windows.treatment, config)
        };
        if let Some(rule) = rule {
            let comparison = compare(guard, rule, windows, config);
            reading.verdict = combine(reading.verdict, comparison.verdict, threshold.is_some());
            reading.comparison = Some(comparison);
        }
        guards.push(reading);
    }
    let any = |v: Verdict| guards.iter().any(|g| g.verdict == v);
    let partial = guards.iter().any(|g| g.verdict == Verdict::InsufficientData && g.samples > 0);
    let verdict = if any(Verdict::Breach) {
        Verdict::Breach
    } else if any(Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else if any(Verdict::Ok) && !partial {
        Verdict::Ok
    } else {
        Verdict::InsufficientData
    };
    Health { verdict, guards, sample_ratio: sample_ratio(config, windows) }
}

/// A guard judged both on its threshold and against control: a breach of either is a breach; ok
/// needs both ok (or the one in force); otherwise the less decided of the two.
fn combine(absolute: Verdict, compared: Verdict, has_threshold: bool) -> Verdict {
    if !has_threshold {
        return compared;
    }
    match (absolute, compared) {
        (Verdict::Breach, _) | (_, Verdict::Breach) => Verdict::Breach,
        (Verdict::Ok, Verdict::Ok) => Verdict::Ok,
        (Verdict::InsufficientData, _) | (_, Verdict::InsufficientData) => Verdict::InsufficientData,
        _ => Verdict::Inconclusive,
    }
}

fn reading(guard: Guard, threshold: Option<f64>, config: &GuardConfig<'_>, test: Test) -> GuardReading {
    GuardReading {
        guard,
        value: None,
        interval: None,
        threshold,
        samples: 0,
        min_samples: 1,
        confidence: config.confidence,
        test,
        verdict: Verdict::InsufficientData,
        source: "push",
        comparison: None,
    }
}

fn is_bad(guard: Guard, value: f64, threshold: f64) -> bool {
    if guard.breaches_below() { value < threshold } else { value > threshold }
}

fn judge_rate(guard: Guard, threshold: Option<f64>, totals: &WindowTotals, config: &GuardConfig<'_>) -> GuardReading {
    let test = match config.decision {
        Decision::Sequential => Test::BetaBinomialSequence,
        Decision::Threshold => Test::PointEstimate,
    };
    let mut r = reading(guard, threshold, config, test);
    let counts = totals.counts(guard);
    (r.value, r.samples, r.min_samples) = (counts.rate(), counts.trials, config.min_samples.max(1));
    let (Some(value), Some(threshold)) = (r.value, threshold) else { return r };
    if r.samples < r.min_samples {
        return r;
    }
    r.verdict = match config.decision {
        Decision::Threshold if is_bad(guard, value, threshold) => Verdict::Breach,
        Decision::Threshold => Verdict::Ok,
        Decision::Sequential => {
            let interval = evidence::rate_interval(counts.events, counts.trials, threshold, config.confidence);
            r.interval = Some(interval);
            side_of(guard, interval, threshold)
        }
    };
    r
}

/// `breach` when the whole interval is on the bad side of the threshold, `ok` when it is wholly
/// on the good side, `inconclusive` when it straddles it.
fn side_of(guard: Guard, interval: Interval, threshold: f64) -> Verdict {
    let (bad, good) = if guard.breaches_below() {
        (interval.upper < threshold, interval.lower >= threshold)
    } else {
        (interval.lower > threshold, interval.upper <= threshold)
    };
    if bad {
        Verdict::Breach
    } else if good {
        Verdict::Ok
    } else {
        Verdict::Inconclusive
    }
}

fn judge_gauge(guard: Guard, threshold: Option<f64>, totals: &WindowTotals, config: &GuardConfig<'_>) -> GuardReading {
    let mut r = reading(guard, threshold, config, Test::ConsecutiveReports);
    let (value, samples) = totals.measure(guard);
    (r.value, r.samples) = (value, samples);
    let (Some(value), Some(threshold)) = (value, threshold) else { return r };
    let needed = usize::try_from(config.breach_reports.max(1)).unwrap_or(usize::MAX);
    let recent = totals.recent(guard);
    let over = recent.iter().rev().take_while(|v| is_bad(guard, **v, threshold)).count();
    r.verdict = if over >= needed || (config.decision == Decision::Threshold && is_bad(guard, value, threshold)) {
        Verdict::Breach
    } else if is_bad(guard, value, threshold) {
        // Over the threshold, but not yet for `breach_reports` reports in a row: one spike.
        Verdict::Inconclusive
    } else {
        Verdict::Ok
    };
    r
}

fn judge_pulled(guard: Guard, threshold: Option<f64>, totals: &WindowTotals, config: &GuardConfig<'_>) -> GuardReading {
    let mut r = reading(guard, threshold, config, Test::LatestQuery);
    let pulled = totals.pulled.get(&guard).copied().unwrap_or_default();
    (r.value, r.samples, r.source) = (pulled.latest, pulled.reads, "prometheus");
    if let (Some(value), Some(threshold)) = (pulled.latest, threshold) {
        r.verdict = if is_bad(guard, value, threshold) { Verdict::Breach } else { Verdict::Ok };
    }
    r
}

fn compare(guard: Guard, rule: &CompareRule, windows: &Cohorts, config: &GuardConfig<'_>) -> Comparison {
    let (t, c) = (windows.treatment.counts(guard), windows.control.counts(guard));
    let mut comparison = Comparison {
        treatment: t.rate(),
        treatment_samples: t.trials,
        control: c.rate(),
        control_samples: c.trials,
        difference: t.rate().zip(c.rate()).map(|(t, c)| t - c),
        excess_interval: None,
        margin: *rule,
        verdict: Verdict::InsufficientData,
    };
    let min = config.min_samples.max(1);
    if t.trials < min || c.trials < min {
        return comparison;
    }
    // Lower is worse for the delivery rate: compare the failure rates instead.
    let (t, c) = if guard.breaches_below() { (t.complement(), c.complement()) } else { (t, c) };
    let relative = rule.max_relative_increase.unwrap_or(0.0);
    let absolute = rule.max_increase.unwrap_or(0.0);
    let tau = guard.default_threshold().min(1.0 - guard.default_threshold());
    let Some(contrast) = evidence::difference_interval(t, c, relative, absolute, tau, config.confidence) else {
        return comparison;
    };
    comparison.excess_interval = Some(contrast.interval);
    comparison.verdict = if contrast.interval.lower > 0.0 {
        Verdict::Breach
    } else if contrast.interval.upper <= 0.0 {
        Verdict::Ok
    } else {
        Verdict::Inconclusive
    };
    comparison
}

fn sample_ratio(config: &GuardConfig<'_>, windows: &Cohorts) -> Option<SampleRatio> {
    let expected = config.expected_share.filter(|s| *s > 0.0 && *s < 1.0)?;
    let (t, c) = (windows.treatment.requests, windows.control.requests);
    if t == 0 || c == 0 {
        return None;
    }
    let total = t + c;
    Some(SampleRatio {
        treatment_requests: t,
        control_requests: c,
        observed_share: t as f64 / total as f64,
        expected_share: expected,
        mismatch: evidence::share_mismatch(t, total, expected),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config<'a>(flag: &'a ThresholdOverrides, stage: &'a ThresholdOverrides, decision: Decision) -> GuardConfig<'a> {
        static NO_RULES: std::sync::OnceLock<CompareRules> = std::sync::OnceLock::new();
        GuardConfig {
            flag_thresholds: flag,
            stage_thresholds: stage,
            min_samples: 100,
            pulled: vec![],
            decision,
            confidence: 0.95,
            breach_reports: 2,
            compare: NO_RULES.get_or_init(CompareRules::new),
            expected_share: None,
        }
    }

    fn judged(totals: WindowTotals, decision: Decision) -> Health {
        let none = ThresholdOverrides::new();
        assess(&config(&none, &none, decision), &Cohorts { treatment: totals, control: WindowTotals::default() })
    }

    /// The runbook's literal rule: the point estimate against the threshold.
    fn health(totals: WindowTotals) -> Health {
        judged(totals, Decision::Threshold)
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
    fn a_sequential_breach_names_its_interval_and_confidence() {
        let h = judged(WindowTotals { requests: 1204, errors: 41, ..Default::default() }, Decision::Sequential);
        assert_eq!(h.verdict, Verdict::Breach);
        let r = &h.guards[0];
        let i = r.interval.expect("an interval");
        assert!(i.lower > 0.01 && i.contains(41.0 / 1204.0), "{i:?}");
        assert_eq!(r.test, Test::BetaBinomialSequence);
        assert_eq!(
            h.summary(),
            format!("error_rate 0.0341 [{}, {}] > 0.01 at 95% over 1204 requests", round(i.lower), round(i.upper))
        );
    }

    #[test]
    fn a_small_sample_near_the_threshold_is_inconclusive_not_a_rollback() {
        // 2 errors in 100 requests: the point estimate says 2× the threshold; the evidence does not.
        let totals = WindowTotals { requests: 100, errors: 2, ..Default::default() };
        assert_eq!(health(totals.clone()).verdict, Verdict::Breach);
        let h = judged(totals, Decision::Sequential);
        assert_eq!(h.verdict, Verdict::Inconclusive);
        assert_eq!(h.inconclusive().count(), 1);
        // Plenty of clean traffic is evidence of health.
        let h = judged(WindowTotals { requests: 5000, errors: 10, ..Default::default() }, Decision::Sequential);
        assert_eq!(h.verdict, Verdict::Ok, "{}", h.summary());
    }

    #[test]
    fn a_gauge_breaches_only_after_consecutive_reports_over_the_threshold() {
        let mut totals = WindowTotals { p99_latency_ms: Some(9000.0), p99_latency_reports: 1, ..Default::default() };
        totals.p99_latency_recent = vec![100.0, 9000.0];
        assert_eq!(judged(totals.clone(), Decision::Sequential).verdict, Verdict::Inconclusive, "one spike");
        totals.p99_latency_recent = vec![9000.0, 120.0];
        totals.p99_latency_ms = Some(120.0);
        assert_eq!(judged(totals.clone(), Decision::Sequential).verdict, Verdict::Ok, "the spike passed");
        totals.p99_latency_recent = vec![120.0, 9000.0, 8000.0];
        totals.p99_latency_ms = Some(8000.0);
        assert_eq!(judged(totals, Decision::Sequential).verdict, Verdict::Breach, "two in a row");
    }

    #[test]
    fn a_comparison_rolls_back_a_regression_of_its_own_and_not_a_global_incident() {
        let none = ThresholdOverrides::new();
        let off: ThresholdOverrides = [(Guard::ErrorRate, None)].into();
        let rules: CompareRules =
            [(Guard::ErrorRate, CompareRule { max_increase: Some(0.005), max_relative_increase: None })].into();
        let config = GuardConfig { compare: &rules, ..config(&off, &none, Decision::Sequential) };
        let both_bad = Cohorts {
            treatment: WindowTotals { requests: 50_000, errors: 2_500, ..Default::default() },
            control: WindowTotals { requests: 450_000, errors: 22_500, ..Default::default() },
        };
        let h = assess(&config, &both_bad);
        assert_eq!(h.verdict, Verdict::Ok, "{}", h.summary());
        let own = Cohorts {
            treatment: WindowTotals { requests: 5_000, errors: 250, ..Default::default() },
            control: WindowTotals { requests: 45_000, errors: 450, ..Default::default() },
        };
        let h = assess(&config, &own);
        assert_eq!(h.verdict, Verdict::Breach, "{}", h.summary());
        assert!(
            h.summary().starts_with("error_rate treatment 0.05 vs control 0.01 over 5000/45000 requests: excess [")
        );
    }

    #[test]
    fn a_treatment_share_far_from_the_served_share_is_a_mismatch() {
        let none = ThresholdOverrides::new();
        let config = GuardConfig { expected_share: Some(0.1), ..config(&none, &none, Decision::Sequential) };
        let windows = |t: u64, c: u64| Cohorts {
            treatment: WindowTotals { requests: t, ..Default::default() },
            control: WindowTotals { requests: c, ..Default::default() },
        };
        let right = assess(&config, &windows(1_010, 8_990)).sample_ratio.expect("both cohorts reported");
        assert!(!right.mismatch);
        let wrong = assess(&config, &windows(3_100, 6_900)).sample_ratio.expect("both cohorts reported");
        assert!(wrong.mismatch);
        assert_eq!(
            wrong.describe(),
            "sample_ratio_mismatch: treatment 31% of requests, expected 10% (over 10000 requests)"
        );
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
        let config = GuardConfig { min_samples: 10, ..config(&flag, &stage, Decision::Threshold) };
        assert_eq!(config.threshold(Guard::ErrorRate), Some(0.001));
        assert_eq!(config.threshold(Guard::QueueDepth), None);
        assert_eq!(config.threshold(Guard::BounceRate), Some(0.05));
        let totals = WindowTotals {
            requests: 10,
            errors: 1,
            queue_depth: Some(1e9),
            queue_depth_reports: 1,
            ..Default::default()
        };
        let h = assess(&config, &Cohorts { treatment: totals, control: WindowTotals::default() });
        assert!(h.guards.iter().all(|g| g.guard != Guard::QueueDepth));
        assert_eq!(h.verdict, Verdict::Breach);
    }

    #[test]
    fn pulled_guards_use_their_latest_read_and_a_failed_read_holds() {
        let none = ThresholdOverrides::new();
        let config = GuardConfig { pulled: vec![Guard::ErrorRate], ..config(&none, &none, Decision::Sequential) };
        let mut totals = WindowTotals { requests: 10_000, errors: 0, ..Default::default() };
        totals.pulled.insert(Guard::ErrorRate, PulledReading { latest: Some(0.2), reads: 3 });
        let cohorts = |totals: &WindowTotals| Cohorts { treatment: totals.clone(), control: WindowTotals::default() };
        let h = assess(&config, &cohorts(&totals));
        assert_eq!(h.verdict, Verdict::Breach, "the query wins over pushed counters");
        assert_eq!(h.summary(), "error_rate 0.2 > 0.01 over 3 queries");
        totals.pulled.insert(Guard::ErrorRate, PulledReading { latest: None, reads: 4 });
        assert_eq!(assess(&config, &cohorts(&totals)).verdict, Verdict::InsufficientData);
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
