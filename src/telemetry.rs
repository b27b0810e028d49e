//! Prometheus metrics of this replica, rendered in the text exposition format at `/metrics`.
//!
//! Each service instance owns its recorder (no global state), so several instances in one test
//! process keep separate figures. Hot-path handles are registered once and only incremented.
//! The evaluation latency histogram is our own fixed buckets of atomic counters: the recorder's
//! histograms keep every sample until they are folded in (memory growing with traffic between
//! scrapes, and a pause to fold them), where recording here is a few relaxed atomic adds.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Recorder, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::domain::rollout::{Reason, Status};
use crate::snapshot::Snapshot;

/// Evaluation latency buckets, in seconds (1 µs … 10 ms).
const LATENCY_BUCKETS: [f64; 10] = [1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2];

const LATENCY_NAME: &str = "rollout_evaluation_duration_seconds";
const LATENCY_HELP: &str = "Time to evaluate a flag for a user, inside the handler.";

/// A Prometheus histogram with fixed buckets: samples per bucket (not cumulative), their count
/// and their sum in nanoseconds.
#[derive(Default)]
struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    fn record(&self, took: Duration) {
        let secs = took.as_secs_f64();
        // Above the last bound only `+Inf` (the count) holds the sample.
        if let Some(i) = LATENCY_BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The text exposition, as the Prometheus exporter writes histograms.
    fn render(&self, out: &mut String) {
        // Read the count first: a sample recorded meanwhile can only make the buckets larger, never
        // the `+Inf` bucket smaller than the others.
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP {LATENCY_NAME} {LATENCY_HELP}");
        let _ = writeln!(out, "# TYPE {LATENCY_NAME} histogram");
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{LATENCY_NAME}_bucket{{le=\"{bound}\"}} {}", cumulative.min(count));
        }
        let _ = writeln!(out, "{LATENCY_NAME}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{LATENCY_NAME}_sum {sum}");
        let _ = writeln!(out, "{LATENCY_NAME}_count {count}\n");
    }
}

pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    evaluations: [Counter; 4],
    evaluation_seconds: LatencyHistogram,
    notification_failures: Counter,
    store_errors: Counter,
    leader: Gauge,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

fn reason_index(reason: Reason) -> usize {
    match reason {
        Reason::InternalUser => 0,
        Reason::InRollout => 1,
        Reason::NotInRollout => 2,
        Reason::FlagOff => 3,
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let (evaluations, notification_failures, store_errors, leader) = with_local_recorder(&recorder, || {
            let by = |r: Reason| metrics::counter!("rollout_evaluations_total", "result" => r.as_str());
            (
                [by(Reason::InternalUser), by(Reason::InRollout), by(Reason::NotInRollout), by(Reason::FlagOff)],
                metrics::counter!("rollout_notification_failures_total"),
                metrics::counter!("rollout_store_errors_total"),
                metrics::gauge!("rollout_leader"),
            )
        });
        describe(&recorder);
        Self {
            recorder,
            handle,
            evaluations,
            evaluation_seconds: LatencyHistogram::default(),
            notification_failures,
            store_errors,
            leader,
        }
    }

    pub fn evaluation(&self, reason: Reason, took: Duration) {
        self.evaluations[reason_index(reason)].increment(1);
        self.evaluation_seconds.record(took);
    }

    pub fn transition(&self, flag: &str, action: &'static str) {
        with_local_recorder(&self.recorder, || {
            metrics::counter!("rollout_transitions_total", "flag" => flag.to_owned(), "action" => action).increment(1);
        });
    }

    /// A rollback, by what caused it: a guard name, `alert` or `operator`.
    pub fn rollback(&self, flag: &str, cause: &str) {
        with_local_recorder(&self.recorder, || {
            metrics::counter!("rollout_rollbacks_total", "flag" => flag.to_owned(), "guard" => cause.to_owned())
                .increment(1);
        });
    }

    pub fn guard_value(&self, flag: &str, guard: &'static str, value: f64) {
        with_local_recorder(&self.recorder, || {
            metrics::gauge!("rollout_guard_value", "flag" => flag.to_owned(), "guard" => guard).set(value);
        });
    }

    pub fn notification_failed(&self) {
        self.notification_failures.increment(1);
    }

    pub fn store_error(&self) {
        self.store_errors.increment(1);
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(if leading { 1.0 } else { 0.0 });
    }

    /// The exposition text, with per-flag gauges taken from the snapshot now.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        with_local_recorder(&self.recorder, || {
            for view in snapshot.all() {
                let flag = &view.flag;
                metrics::gauge!("rollout_flag_percent", "flag" => flag.name.clone()).set(f64::from(view.percent));
                metrics::gauge!("rollout_flag_stage_index", "flag" => flag.name.clone())
                    .set(flag.state.stage_index as f64);
                for status in Status::ALL {
                    let on = if flag.state.status == status { 1.0 } else { 0.0 };
                    metrics::gauge!("rollout_flag_status", "flag" => flag.name.clone(), "status" => status.as_str())
                        .set(on);
                }
            }
        });
        let mut text = self.handle.render();
        self.evaluation_seconds.render(&mut text);
        text
    }
}

fn describe(recorder: &PrometheusRecorder) {
    use metrics::SharedString;
    let help = |name: &'static str, text: &'static str| {
        recorder.describe_gauge(name.into(), None, SharedString::const_str(text));
    };
    help("rollout_flag_percent", "Share of users enabled by bucket for the flag, as this replica serves it.");
    help("rollout_flag_stage_index", "Index of the flag's current stage in its plan.");
    help("rollout_flag_status", "1 for the flag's current status, 0 for the others.");
    help("rollout_guard_value", "Latest value of a guard for a flag.");
    help("rollout_leader", "1 while this replica holds the controller lease.");
    let count = |name: &'static str, text: &'static str| {
        recorder.describe_counter(name.into(), None, SharedString::const_str(text));
    };
    count("rollout_evaluations_total", "Flag evaluations answered, by result.");
    count("rollout_transitions_total", "Rollout transitions written by this replica, by action.");
    count("rollout_rollbacks_total", "Rollbacks written by this replica, by cause (guard, alert, operator).");
    count("rollout_notification_failures_total", "Notifications and rollback hooks that failed after retries.");
    count("rollout_store_errors_total", "Store operations that failed.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_histogram_renders_cumulative_buckets_like_the_exporter() {
        let telemetry = Telemetry::new();
        for micros in [1, 3, 3, 20_000] {
            telemetry.evaluation(Reason::InRollout, Duration::from_micros(micros));
        }
        let text = telemetry.render(&Snapshot::new());
        let lines: Vec<&str> = text.lines().skip_while(|l| !l.contains(LATENCY_NAME)).take(16).collect();
        assert_eq!(
            lines,
            [
                "# HELP rollout_evaluation_duration_seconds Time to evaluate a flag for a user, inside the handler.",
                "# TYPE rollout_evaluation_duration_seconds histogram",
                "rollout_evaluation_duration_seconds_bucket{le=\"0.000001\"} 1",
                "rollout_evaluation_duration_seconds_bucket{le=\"0.0000025\"} 1",
                "rollout_evaluation_duration_seconds_bucket{le=\"0.000005\"} 3",
                "rollout_evaluation_duration_seconds_bucket{le=\"0.00001\"} 3",
                "rollout_evaluation_duration_seconds_bucket{le=\"0.000025\"} 3",
                "rollout_evaluation_duration_seconds_bucket{le=\"0.00005\"} 3",
                "rollout_evaluation_duration_seconds_bucket{le=\"0.0001\"} 3",
                "rollout_evaluation_duration_seconds_bucket{le=\"0.00025\"} 3",
                "rollout_evaluation_duration_seconds_bucket{le=\"0.001\"} 3",
                "rollout_evaluation_duration_seconds_bucket{le=\"0.01\"} 3",
                "rollout_evaluation_duration_seconds_bucket{le=\"+Inf\"} 4",
                "rollout_evaluation_duration_seconds_sum 0.020007",
                "rollout_evaluation_duration_seconds_count 4",
                "",
            ]
        );
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
        assert!(parsed.samples.iter().any(|s| s.metric == "rollout_evaluation_duration_seconds"));
    }
}
