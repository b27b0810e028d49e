//! Prometheus metrics of this replica, rendered in the text exposition format at `/metrics`.
//!
//! Each service instance owns its recorder (no global state), so several instances in one test
//! process keep separate figures. Hot-path handles are registered once and only incremented.
//! Series named after a flag are not in the recorder, which can never forget a series: the
//! flag's gauges are rendered from the snapshot at each scrape, and its counters live in a map
//! rendered and pruned against the snapshot, so a deleted flag's series go with it.
//! `rollout_build_info` names the version and commit (stamped by `build.rs`); on Linux the standard
//! `process_*` series (CPU seconds, resident and virtual memory, open and maximum file
//! descriptors, start time) are read from `/proc` at each scrape.
//! Guard values are one family per guard, in base units with the unit in the name (rates as
//! `_ratio`, the p99 latency in `_seconds`).
//! The evaluation latency histogram is our own fixed buckets of atomic counters: the recorder's
//! histograms keep every sample until they are folded in (memory growing with traffic between
//! scrapes, and a pause to fold them), where recording here is two relaxed atomic adds on a
//! shard of the calling thread's, the shards merged at scrape.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use metrics::{Counter, Gauge, Recorder, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::domain::guards::Guard;
use crate::domain::rollout::{Reason, Status};
use crate::snapshot::{FlagView, Snapshot};
use crate::util::lock;

/// Evaluation latency buckets, in seconds (1 µs … 10 ms).
const LATENCY_BUCKETS: [f64; 10] = [1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2];
/// The same bounds in nanoseconds, which a sample is compared with (no float conversion).
const LATENCY_BOUNDS_NANOS: [u64; 10] =
    [1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 10_000_000];

const LATENCY_NAME: &str = "rollout_evaluation_duration_seconds";
const LATENCY_HELP: &str = "Time to evaluate a flag for a user, inside the handler.";

/// Shards of the histogram. A thread records into its own shard (picked once per thread, round
/// robin), so runtime workers on different cores never write to the same cache line; a scrape
/// adds the shards up. More threads than shards share them, still correctly (atomic adds).
const SHARDS: usize = 8;

/// A Prometheus histogram with fixed buckets, sharded by thread, merged at scrape.
#[derive(Default)]
struct LatencyHistogram {
    shards: [Shard; SHARDS],
}

/// One thread's samples: per bucket (not cumulative; the last one is above every bound, `+Inf`
/// alone), and their sum in nanoseconds. Recording is two relaxed adds. Aligned to two cache
/// lines so that neighbouring shards do not share one (nor the adjacent line the CPU prefetches).
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, `usize::MAX` until it first records.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn shard_index() -> usize {
    SHARD.with(|shard| {
        if shard.get() == usize::MAX {
            shard.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        shard.get()
    })
}

impl LatencyHistogram {
    fn record(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket =
            LATENCY_BOUNDS_NANOS.iter().position(|&bound| nanos <= bound).unwrap_or(LATENCY_BOUNDS_NANOS.len());
        let shard = &self.shards[shard_index()];
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The text exposition, as the Prometheus exporter writes histograms.
    fn render(&self, out: &mut String) {
        // Each bucket is read once, and the count is their total: cumulative counts never exceed it.
        let mut buckets = [0u64; LATENCY_BUCKETS.len() + 1];
        let mut sum_nanos = 0u64;
        for shard in &self.shards {
            for (total, n) in buckets.iter_mut().zip(&shard.buckets) {
                *total += n.load(Ordering::Relaxed);
            }
            sum_nanos = sum_nanos.wrapping_add(shard.sum_nanos.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# HELP {LATENCY_NAME} {LATENCY_HELP}");
        let _ = writeln!(out, "# TYPE {LATENCY_NAME} histogram");
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(&buckets) {
            cumulative += n;
            let _ = writeln!(out, "{LATENCY_NAME}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = cumulative + buckets[LATENCY_BUCKETS.len()];
        let _ = writeln!(out, "{LATENCY_NAME}_bucket{{le=\"+Inf\"}} {count}");
        let sum = sum_nanos as f64 / 1e9;
        let _ = writeln!(out, "{LATENCY_NAME}_sum {sum}");
        let _ = writeln!(out, "{LATENCY_NAME}_count {count}\n");
    }
}

/// A flag's counters and latest guard values on this replica.
#[derive(Default)]
struct FlagSeries {
    transitions: BTreeMap<&'static str, u64>,
    /// By cause: a guard name, `alert` or `operator`.
    rollbacks: BTreeMap<String, u64>,
    guard_values: BTreeMap<Guard, f64>,
}

pub struct Telemetry {
    handle: PrometheusHandle,
    evaluations: [Counter; 4],
    evaluation_seconds: LatencyHistogram,
    notification_failures: Counter,
    store_errors: Counter,
    leader: Gauge,
    per_flag: Mutex<HashMap<String, FlagSeries>>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let (evaluations, notification_failures, store_errors, leader) = with_local_recorder(&recorder, || {
            let by = |r: Reason| metrics::counter!("rollout_evaluations_total", "result" => r.as_str());
            (
                Reason::ALL.map(by),
                metrics::counter!("rollout_notification_failures_total"),
                metrics::counter!("rollout_store_errors_total"),
                metrics::gauge!("rollout_leader"),
            )
        });
        register_help(&recorder);
        Self {
            handle,
            evaluations,
            evaluation_seconds: LatencyHistogram::default(),
            notification_failures,
            store_errors,
            leader,
            per_flag: Mutex::default(),
        }
    }

    pub fn evaluation(&self, reason: Reason, took: Duration) {
        self.evaluations[reason.index()].increment(1);
        self.evaluation_seconds.record(took);
    }

    /// `count` evaluations of a batch with this outcome (their latency is the batch's, not timed).
    pub fn evaluations(&self, reason: Reason, count: u64) {
        if count > 0 {
            self.evaluations[reason.index()].increment(count);
        }
    }

    pub fn transition(&self, flag: &str, action: &'static str) {
        *self.flag_series().entry(flag.to_owned()).or_default().transitions.entry(action).or_default() += 1;
    }

    /// A rollback, by what caused it: a guard name, `alert` or `operator`.
    pub fn rollback(&self, flag: &str, cause: &str) {
        let mut per_flag = self.flag_series();
        *per_flag.entry(flag.to_owned()).or_default().rollbacks.entry(cause.to_owned()).or_default() += 1;
    }

    /// The latest reading of a guard, in the guard's own unit (the p99 latency in ms).
    pub fn guard_value(&self, flag: &str, guard: Guard, value: f64) {
        self.flag_series().entry(flag.to_owned()).or_default().guard_values.insert(guard, value);
    }

    /// Drops every series of a deleted flag at once (other replicas' go at their next scrape).
    pub fn forget_flag(&self, flag: &str) {
        self.flag_series().remove(flag);
    }

    fn flag_series(&self) -> MutexGuard<'_, HashMap<String, FlagSeries>> {
        // Every critical section is one map update or one render: a poisoned map is still sound.
        lock(&self.per_flag)
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

    /// The exposition text, with per-flag series for the flags the snapshot holds now.
    pub fn render(&self, snapshot: &Snapshot, streams: StreamStats) -> String {
        let mut text = self.handle.render();
        render_build_info(&mut text);
        process::render(&mut text);
        let views = snapshot.all();
        render_flag_gauges(&views, &mut text);
        self.render_flag_series(&views, &mut text);
        self.evaluation_seconds.render(&mut text);
        render_streams(streams, &mut text);
        text
    }

    /// The counters and guard values of the flags in `views`; those of flags no longer among them
    /// (deleted, also through another replica) are dropped.
    fn render_flag_series(&self, views: &[Arc<FlagView>], out: &mut String) {
        let mut per_flag = self.flag_series();
        let live: HashSet<&str> = views.iter().map(|v| v.flag.name.as_str()).collect();
        per_flag.retain(|name, _| live.contains(name.as_str()));
        let (mut transitions, mut rollbacks) = (Vec::new(), Vec::new());
        let mut values: BTreeMap<Guard, Vec<(String, f64)>> = BTreeMap::new();
        for view in views {
            let Some(series) = per_flag.get(&view.flag.name) else { continue };
            let flag = label("flag", &view.flag.name);
            let sample = |name, value: &str, n| (format!("{flag},{}", label(name, value)), n);
            transitions.extend(series.transitions.iter().map(|(action, n)| sample("action", action, *n as f64)));
            rollbacks.extend(series.rollbacks.iter().map(|(cause, n)| sample("guard", cause, *n as f64)));
            for (guard, value) in &series.guard_values {
                values.entry(*guard).or_default().push((flag.clone(), value * guard_metric(*guard).1));
            }
        }
        family(out, "rollout_transitions_total", "counter", TRANSITIONS_HELP, transitions);
        family(out, "rollout_rollbacks_total", "counter", ROLLBACKS_HELP, rollbacks);
        for (guard, samples) in values {
            let (name, _, help) = guard_metric(guard);
            family(out, name, "gauge", help, samples);
        }
    }
}

/// This replica's change streams (`GET /stream`) at one moment: open now, and counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub open: u64,
    pub opened: u64,
    pub refused: u64,
    pub dropped_behind: u64,
    pub events: u64,
}

fn render_streams(s: StreamStats, out: &mut String) {
    let one = |value: u64| [(String::new(), value as f64)];
    family(out, "rollout_stream_clients", "gauge", "Change streams (GET /stream) open on this replica.", one(s.open));
    let opened = one(s.opened);
    family(out, "rollout_stream_clients_opened_total", "counter", "Change streams opened on this replica.", opened);
    let refused = one(s.refused);
    family(out, "rollout_stream_clients_refused_total", "counter", STREAMS_REFUSED_HELP, refused);
    let behind = one(s.dropped_behind);
    family(out, "rollout_stream_clients_dropped_total", "counter", STREAMS_DROPPED_HELP, behind);
    let events = one(s.events);
    family(out, "rollout_stream_events_total", "counter", "Events sent on change streams (one per client).", events);
}

const STREAMS_REFUSED_HELP: &str = "Change streams refused: the replica had --max-stream-clients open.";
const STREAMS_DROPPED_HELP: &str = "Change streams ended because they fell more than the replay buffer behind the feed (a client whose socket stays full is cut by the write timeout instead).";

/// A guard's metric: its name (base unit in it), the factor from the guard's unit, its help.
pub fn guard_metric(guard: Guard) -> (&'static str, f64, &'static str) {
    match guard {
        Guard::ErrorRate => {
            ("rollout_guard_error_ratio", 1.0, "Latest error rate of the flag's stage (errors / requests).")
        }
        Guard::BounceRate => {
            ("rollout_guard_bounce_ratio", 1.0, "Latest bounce rate of the flag's stage (bounces / sends).")
        }
        Guard::ComplaintRate => (
            "rollout_guard_complaint_ratio",
            1.0,
            "Latest complaint rate of the flag's stage (complaints / deliveries).",
        ),
        Guard::DeliveryRate => {
            ("rollout_guard_delivery_ratio", 1.0, "Latest delivery rate of the flag's stage (deliveries / sends).")
        }
        Guard::P99LatencyMs => {
            ("rollout_guard_p99_latency_seconds", 1e-3, "Latest p99 latency reported for the flag's stage.")
        }
        Guard::QueueDepth => ("rollout_guard_queue_depth", 1.0, "Latest queue depth reported for the flag's stage."),
        Guard::WebhookErrorRate => (
            "rollout_guard_webhook_error_ratio",
            1.0,
            "Latest webhook error rate of the flag's stage (webhook errors / webhook calls).",
        ),
    }
}

/// `rollout_build_info{version,commit} 1`.
fn render_build_info(out: &mut String) {
    let labels =
        format!("{},{}", label("version", env!("CARGO_PKG_VERSION")), label("commit", env!("ROLLOUT_BUILD_COMMIT")));
    family(out, "rollout_build_info", "gauge", BUILD_INFO_HELP, [(labels, 1.0)]);
}

/// The standard `process_*` series, read from `/proc/self` at each scrape (Linux only; elsewhere none).
mod process {
    #[cfg(target_os = "linux")]
    pub fn render(out: &mut String) {
        use procfs::WithCurrentSystemInfo as _;
        use procfs::process::{LimitValue, Process};

        use super::family;

        let Ok(me) = Process::myself() else { return };
        let ticks = procfs::ticks_per_second() as f64;
        if let Ok(stat) = me.stat() {
            let cpu = (stat.utime + stat.stime) as f64 / ticks;
            family(
                out,
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                [(String::new(), cpu)],
            );
            let rss = stat.rss_bytes().get() as f64;
            family(
                out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                [(String::new(), rss)],
            );
            family(
                out,
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                [(String::new(), stat.vsize as f64)],
            );
            if let Ok(boot) = procfs::boot_time_secs() {
                let start = boot as f64 + stat.starttime as f64 / ticks;
                family(
                    out,
                    "process_start_time_seconds",
                    "gauge",
                    "Start time of the process since unix epoch in seconds.",
                    [(String::new(), start)],
                );
            }
        }
        if let Ok(fds) = me.fd_count() {
            family(out, "process_open_fds", "gauge", "Number of open file descriptors.", [(String::new(), fds as f64)]);
        }
        if let Ok(limits) = me.limits()
            && let LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            family(
                out,
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                [(String::new(), max as f64)],
            );
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn render(_out: &mut String) {}
}

/// Each flag's percent, stage and status, as the snapshot holds it.
fn render_flag_gauges(views: &[Arc<FlagView>], out: &mut String) {
    let flag = |v: &FlagView| label("flag", &v.flag.name);
    let percents = views.iter().map(|v| (flag(v), f64::from(v.percent)));
    family(out, "rollout_flag_percent", "gauge", PERCENT_HELP, percents);
    let stages = views.iter().map(|v| (flag(v), v.flag.state.stage_index as f64));
    family(out, "rollout_flag_stage_index", "gauge", STAGE_HELP, stages);
    let statuses = views.iter().flat_map(|v| {
        Status::ALL.into_iter().map(move |status| {
            let on = if v.flag.state.status == status { 1.0 } else { 0.0 };
            (format!("{},{}", flag(v), label("status", status.as_str())), on)
        })
    });
    family(out, "rollout_flag_status", "gauge", STATUS_HELP, statuses);
}

const PERCENT_HELP: &str = "Share of users enabled by bucket for the flag, as this replica serves it.";
const STAGE_HELP: &str = "Index of the flag's current stage in its plan.";
const STATUS_HELP: &str = "1 for the flag's current status, 0 for the others.";
const TRANSITIONS_HELP: &str = "Rollout transitions written by this replica, by action.";
const ROLLBACKS_HELP: &str = "Rollbacks written by this replica, by cause (guard, alert, operator).";
const BUILD_INFO_HELP: &str = "1, labelled with the version and the commit this binary was built from.";

/// `name="value"`, the value escaped as the text format wants.
fn label(name: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    format!("{name}=\"{escaped}\"")
}

/// One metric family in the text format: help, type, then a line per sample (labels, value);
/// nothing at all without samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: impl IntoIterator<Item = (String, f64)>) {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let series = if labels.is_empty() { name.to_owned() } else { format!("{name}{{{labels}}}") };
        let _ = match value {
            v if v.is_nan() => writeln!(out, "{series} NaN"),
            v if v.is_infinite() => writeln!(out, "{series} {}Inf", if v > 0.0 { "+" } else { "-" }),
            v => writeln!(out, "{series} {v}"),
        };
    }
    out.push('\n');
}

/// Gives the recorder's own series their help text.
fn register_help(recorder: &PrometheusRecorder) {
    use metrics::SharedString;
    let help = |name: &'static str, text: &'static str| {
        recorder.describe_gauge(name.into(), None, SharedString::const_str(text));
    };
    help("rollout_leader", "1 while this replica holds the controller lease.");
    let count = |name: &'static str, text: &'static str| {
        recorder.describe_counter(name.into(), None, SharedString::const_str(text));
    };
    count("rollout_evaluations_total", "Flag evaluations answered, by result.");
    count("rollout_notification_failures_total", "Notifications and rollback hooks that failed after retries.");
    count("rollout_store_errors_total", "Store operations that failed.");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::plan::FlagDefinition;
    use crate::domain::rollout::Flag;

    #[test]
    fn a_flag_s_series_are_rendered_while_the_snapshot_holds_it_and_go_with_it() {
        let telemetry = Telemetry::new();
        let snapshot = Snapshot::new();
        snapshot.upsert(Flag::new("f".into(), FlagDefinition::default(), 1));
        telemetry.transition("f", "start");
        telemetry.rollback("f", "error_rate");
        telemetry.guard_value("f", Guard::ErrorRate, 0.5);
        let text = telemetry.render(&snapshot, StreamStats::default());
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
        let named: Vec<&str> =
            parsed.samples.iter().filter(|s| s.labels.get("flag") == Some("f")).map(|s| s.metric.as_str()).collect();
        // Percent, stage, six statuses, a transition, a rollback, a guard value.
        assert_eq!(named.len(), 11, "{named:?}");
        snapshot.remove("f");
        assert!(!telemetry.render(&snapshot, StreamStats::default()).contains("flag=\"f\""));
        // Created again: its counters start afresh.
        snapshot.upsert(Flag::new("f".into(), FlagDefinition::default(), 2));
        assert!(!telemetry.render(&snapshot, StreamStats::default()).contains("rollout_transitions_total{flag=\"f\""));
    }

    #[test]
    fn samples_recorded_on_more_threads_than_shards_are_all_counted_at_scrape() {
        let telemetry = Telemetry::new();
        let threads = SHARDS + 4;
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..1_000 {
                        telemetry.evaluation(Reason::InRollout, Duration::from_micros(3));
                    }
                });
            }
        });
        let text = telemetry.render(&Snapshot::new(), StreamStats::default());
        let total = threads * 1_000;
        for line in [
            format!("{LATENCY_NAME}_bucket{{le=\"0.0000025\"}} 0"),
            format!("{LATENCY_NAME}_bucket{{le=\"0.000005\"}} {total}"),
            format!("{LATENCY_NAME}_count {total}"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn the_latency_histogram_renders_cumulative_buckets_like_the_exporter() {
        let telemetry = Telemetry::new();
        for micros in [1, 3, 3, 20_000] {
            telemetry.evaluation(Reason::InRollout, Duration::from_micros(micros));
        }
        let text = telemetry.render(&Snapshot::new(), StreamStats::default());
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
