//! Prometheus metrics of this replica, rendered in the text exposition format at `/metrics`.
//!
//! Each service instance owns its recorder (no global state), so several instances in one test
//! process keep separate figures. Hot-path handles are registered once and only incremented.
//! The recorder keeps every histogram sample until it is folded into the buckets, so
//! [`Telemetry::run_upkeep`] runs every [`UPKEEP_EVERY`] (memory stays flat between scrapes).

use std::time::Duration;

use tokio::sync::watch;

use metrics::{Counter, Gauge, Histogram, Recorder, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::domain::rollout::{Reason, Status};
use crate::snapshot::Snapshot;

/// How often histogram samples are folded into their buckets.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Evaluation latency buckets, in seconds (1 µs … 10 ms).
const LATENCY_BUCKETS: [f64; 10] = [1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2];

pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    evaluations: [Counter; 4],
    evaluation_seconds: Histogram,
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
        let builder = PrometheusBuilder::new();
        // Fixed, valid bucket values: setting them cannot fail.
        let builder = builder.set_buckets(&LATENCY_BUCKETS).unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let (evaluations, evaluation_seconds, notification_failures, store_errors, leader) =
            with_local_recorder(&recorder, || {
                let by = |r: Reason| metrics::counter!("rollout_evaluations_total", "result" => r.as_str());
                (
                    [by(Reason::InternalUser), by(Reason::InRollout), by(Reason::NotInRollout), by(Reason::FlagOff)],
                    metrics::histogram!("rollout_evaluation_duration_seconds"),
                    metrics::counter!("rollout_notification_failures_total"),
                    metrics::counter!("rollout_store_errors_total"),
                    metrics::gauge!("rollout_leader"),
                )
            });
        describe(&recorder);
        Self { recorder, handle, evaluations, evaluation_seconds, notification_failures, store_errors, leader }
    }

    pub fn evaluation(&self, reason: Reason, took: Duration) {
        self.evaluations[reason_index(reason)].increment(1);
        self.evaluation_seconds.record(took.as_secs_f64());
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

    /// Folds the histogram samples recorded since the last upkeep into their buckets.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Runs [`Self::run_upkeep`] every [`UPKEEP_EVERY`] until shut down.
    pub async fn upkeep_loop(&self, mut shutdown: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tokio::select! {
                _ = interval.tick() => self.run_upkeep(),
                _ = shutdown.changed() => return,
            }
        }
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
        self.handle.render()
    }
}

fn describe(recorder: &PrometheusRecorder) {
    use metrics::{SharedString, Unit};
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
    recorder.describe_histogram(
        "rollout_evaluation_duration_seconds".into(),
        Some(Unit::Seconds),
        SharedString::const_str("Time to evaluate a flag for a user, inside the handler."),
    );
}
