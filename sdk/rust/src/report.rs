//! Outcome reporting by cohort: what `Client::record` aggregates in memory (per flag and cohort,
//! bounded) and the samples the background task pushes to `POST /flags/{flag}/metrics`.
//! No I/O here; the task that sends lives in `client`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Which group of users an outcome belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cohort {
    /// The flag enabled the user.
    Treatment,
    /// The flag did not enable the user.
    Control,
}

/// What happened when the app served one request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    pub error: bool,
    /// Ignored unless finite and non-negative.
    pub latency_ms: Option<f64>,
}

/// Largest counter the service accepts in one push.
const MAX_COUNTER: u64 = 1_000_000_000;

/// One push: the body of `POST /flags/{flag}/metrics`, and the flag it goes to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Sample {
    #[serde(skip)]
    pub flag: String,
    pub requests: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_latency_ms: Option<f64>,
    pub cohort: Cohort,
}

/// Latencies in logarithmic buckets (ratio 1.04 from 0.01 ms): a p99 within 2% in 2 KB.
#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u32>,
    total: u64,
}

const HIST_MIN_MS: f64 = 0.01;
const HIST_RATIO: f64 = 1.04;
/// 0.01 ms · 1.04^530 ≈ 10^7 ms: anything slower lands in the last bucket.
const HIST_BUCKETS: usize = 530;

impl Histogram {
    fn new() -> Histogram {
        Histogram { counts: vec![0; HIST_BUCKETS], total: 0 }
    }

    fn add(&mut self, ms: f64) {
        let index = if ms <= HIST_MIN_MS { 0.0 } else { (ms / HIST_MIN_MS).ln() / HIST_RATIO.ln() };
        // Saturating float-to-int cast, then clamped into range.
        let index = (index as usize).min(HIST_BUCKETS - 1);
        self.counts[index] = self.counts[index].saturating_add(1);
        self.total += 1;
    }

    /// Nearest-rank p99, as the geometric middle of its bucket.
    fn p99(&self) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = self.total - self.total / 100;
        let mut seen = 0u64;
        let index = self.counts.iter().position(|&c| {
            seen += u64::from(c);
            seen >= rank
        })?;
        Some(HIST_MIN_MS * HIST_RATIO.powf(index as f64 + 0.5))
    }
}

#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    errors: u64,
    latencies: Option<Histogram>,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        self.requests += 1;
        self.errors += u64::from(outcome.error);
        if let Some(ms) = outcome.latency_ms.filter(|ms| ms.is_finite() && *ms >= 0.0) {
            self.latencies.get_or_insert_with(Histogram::new).add(ms);
        }
    }
}

/// The outcomes recorded since the last push, per flag and cohort, for at most `max_flags` flags.
#[derive(Debug)]
pub(crate) struct Tallies {
    live: Mutex<HashMap<String, [Tally; 2]>>,
    max_flags: usize,
    dropped: AtomicU64,
}

fn slot(cohort: Cohort) -> usize {
    match cohort {
        Cohort::Treatment => 0,
        Cohort::Control => 1,
    }
}

impl Tallies {
    pub fn new(max_flags: usize) -> Tallies {
        Tallies { live: Mutex::new(HashMap::new()), max_flags, dropped: AtomicU64::new(0) }
    }

    /// Counts one outcome; a flag past `max_flags` is dropped (and counted), never an allocation spree.
    pub fn record(&self, flag: &str, cohort: Cohort, outcome: Outcome) {
        // A poisoned lock only means another recorder panicked mid-add: the counts are still usable.
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tallies) = live.get_mut(flag) {
            tallies[slot(cohort)].add(outcome);
        } else if live.len() < self.max_flags {
            let mut tallies = [Tally::default(), Tally::default()];
            tallies[slot(cohort)].add(outcome);
            live.insert(flag.to_owned(), tallies);
        } else {
            drop(live);
            self.count_dropped(1);
        }
    }

    /// Everything recorded since the last call, as samples to push; the tallies start over.
    pub fn take(&self) -> Vec<Sample> {
        let live = std::mem::take(&mut *self.live.lock().unwrap_or_else(|e| e.into_inner()));
        let mut samples = Vec::new();
        for (flag, tallies) in live {
            for (tally, cohort) in tallies.into_iter().zip([Cohort::Treatment, Cohort::Control]) {
                if tally.requests > 0 {
                    samples.push(Sample {
                        flag: flag.clone(),
                        requests: tally.requests,
                        errors: tally.errors,
                        p99_latency_ms: tally.latencies.and_then(|h| h.p99()),
                        cohort,
                    });
                }
            }
        }
        samples
    }

    pub fn count_dropped(&self, outcomes: u64) {
        self.dropped.fetch_add(outcomes, Ordering::Relaxed);
    }

    /// How many recorded outcomes were discarded (too many flags, service unreachable too long,
    /// or refused by the service).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Samples that could not be pushed yet, merged per flag and cohort, kept for at most `max_age`.
#[derive(Debug)]
pub(crate) struct Outbox {
    waiting: HashMap<(String, Cohort), (Sample, Instant)>,
    max_age: Duration,
}

impl Outbox {
    pub fn new(max_age: Duration) -> Outbox {
        Outbox { waiting: HashMap::new(), max_age }
    }

    /// Adds fresh samples, merged into any waiting one of the same flag and cohort (counts add,
    /// the p99 is the larger: the conservative figure for a guard). Returns the outcomes that
    /// did not fit under the service's per-push counter limit.
    pub fn add(&mut self, samples: Vec<Sample>, now: Instant) -> u64 {
        let mut overflow = 0;
        for sample in samples {
            let key = (sample.flag.clone(), sample.cohort);
            let (waiting, _) = self
                .waiting
                .entry(key)
                .or_insert_with(|| (Sample { requests: 0, errors: 0, p99_latency_ms: None, ..sample.clone() }, now));
            let requests = waiting.requests + sample.requests;
            overflow += requests.saturating_sub(MAX_COUNTER);
            waiting.requests = requests.min(MAX_COUNTER);
            waiting.errors = (waiting.errors + sample.errors).min(waiting.requests);
            waiting.p99_latency_ms = match (waiting.p99_latency_ms, sample.p99_latency_ms) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        overflow
    }

    /// Everything waiting, with when it first waited; the outbox is left empty.
    pub fn drain(&mut self) -> Vec<(Sample, Instant)> {
        self.waiting.drain().map(|(_, v)| v).collect()
    }

    /// Puts back a sample whose push failed, unless it has waited past `max_age`: then its
    /// outcomes are returned to be counted as dropped.
    pub fn retry(&mut self, sample: Sample, since: Instant, now: Instant) -> u64 {
        if now.saturating_duration_since(since) >= self.max_age {
            return sample.requests;
        }
        self.waiting.insert((sample.flag.clone(), sample.cohort), (sample, since));
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Outcome {
        Outcome { error: false, latency_ms: None }
    }

    fn find<'a>(samples: &'a [Sample], flag: &str, cohort: Cohort) -> &'a Sample {
        samples.iter().find(|s| s.flag == flag && s.cohort == cohort).expect("a sample for the flag and cohort")
    }

    #[test]
    fn outcomes_are_counted_per_flag_and_cohort_and_start_over_after_a_take() {
        let tallies = Tallies::new(10);
        for i in 0..100 {
            tallies.record("a", Cohort::Treatment, Outcome { error: i % 10 == 0, latency_ms: None });
        }
        for _ in 0..30 {
            tallies.record("a", Cohort::Control, Outcome { error: true, latency_ms: None });
        }
        tallies.record("b", Cohort::Control, ok());
        let samples = tallies.take();
        assert_eq!(samples.len(), 3, "no sample for a cohort without outcomes: {samples:?}");
        let a = find(&samples, "a", Cohort::Treatment);
        assert_eq!((a.requests, a.errors, a.p99_latency_ms), (100, 10, None));
        assert_eq!(
            (find(&samples, "a", Cohort::Control).requests, find(&samples, "a", Cohort::Control).errors),
            (30, 30)
        );
        assert_eq!(find(&samples, "b", Cohort::Control).requests, 1);
        assert!(tallies.take().is_empty());
    }

    #[test]
    fn the_p99_is_within_two_percent_of_the_exact_one() {
        let tallies = Tallies::new(10);
        // 1..=1000 ms: the nearest-rank p99 is 990 ms.
        for ms in 1..=1000 {
            tallies.record("a", Cohort::Treatment, Outcome { error: false, latency_ms: Some(f64::from(ms)) });
        }
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            tallies.record("a", Cohort::Treatment, Outcome { error: false, latency_ms: Some(bad) });
        }
        let samples = tallies.take();
        let a = find(&samples, "a", Cohort::Treatment);
        assert_eq!(a.requests, 1003, "an unusable latency still counts its request");
        let p99 = a.p99_latency_ms.expect("a p99");
        assert!((p99 - 990.0).abs() / 990.0 <= 0.02, "p99 {p99}");
    }

    #[test]
    fn extreme_latencies_are_clamped_not_lost() {
        let mut h = Histogram::new();
        h.add(0.0);
        h.add(1e15);
        assert!(h.p99().is_some_and(|p| p.is_finite() && p > 1e6 && p < 1e12));
    }

    #[test]
    fn flags_past_the_bound_are_dropped_and_counted() {
        let tallies = Tallies::new(2);
        for flag in ["a", "b", "c", "d"] {
            tallies.record(flag, Cohort::Treatment, ok());
            tallies.record(flag, Cohort::Control, ok());
        }
        tallies.record("a", Cohort::Treatment, ok());
        assert_eq!(tallies.dropped(), 4);
        assert_eq!(tallies.take().iter().map(|s| s.requests).sum::<u64>(), 5);
    }

    #[test]
    fn the_body_is_what_the_metrics_route_takes() {
        let sample = Sample { flag: "f".into(), requests: 3, errors: 1, p99_latency_ms: None, cohort: Cohort::Control };
        assert_eq!(
            serde_json::to_value(&sample).ok(),
            Some(serde_json::json!({"requests": 3, "errors": 1, "cohort": "control"}))
        );
        let with_p99 = Sample { p99_latency_ms: Some(12.5), cohort: Cohort::Treatment, ..sample };
        assert_eq!(
            serde_json::to_value(&with_p99).ok(),
            Some(serde_json::json!({"requests": 3, "errors": 1, "p99_latency_ms": 12.5, "cohort": "treatment"}))
        );
    }

    #[test]
    fn waiting_samples_merge_and_expire_after_the_max_age() {
        let start = Instant::now();
        let mut outbox = Outbox::new(Duration::from_secs(60));
        let sample = |requests, p99| Sample {
            flag: "f".into(),
            requests,
            errors: 1,
            p99_latency_ms: p99,
            cohort: Cohort::Treatment,
        };
        assert_eq!(outbox.add(vec![sample(10, Some(5.0))], start), 0);
        assert_eq!(outbox.add(vec![sample(5, Some(9.0)), sample(1, None)], start + Duration::from_secs(5)), 0);
        let waiting = outbox.drain();
        assert_eq!(waiting.len(), 1);
        let (merged, since) = waiting[0].clone();
        assert_eq!((merged.requests, merged.errors, merged.p99_latency_ms, since), (16, 3, Some(9.0), start));
        assert_eq!(outbox.retry(merged.clone(), since, start + Duration::from_secs(59)), 0, "kept while young");
        let (again, since) = outbox.drain().remove(0);
        assert_eq!(outbox.retry(again, since, start + Duration::from_secs(60)), 16, "dropped at the max age");
        assert!(outbox.drain().is_empty());
    }

    #[test]
    fn counts_past_the_per_push_limit_are_reported_as_overflow() {
        let mut outbox = Outbox::new(Duration::from_secs(60));
        let big = Sample {
            flag: "f".into(),
            requests: MAX_COUNTER,
            errors: 0,
            p99_latency_ms: None,
            cohort: Cohort::Control,
        };
        assert_eq!(outbox.add(vec![big.clone(), Sample { requests: 7, ..big }], Instant::now()), 7);
        assert_eq!(outbox.drain()[0].0.requests, MAX_COUNTER);
    }
}
