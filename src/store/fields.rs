//! The fields of a metric bucket, spelled once for every store: a pushed sample or a pulled value
//! becomes [`Update`]s of named fields, and a bucket's fields, read back, add up into
//! [`WindowTotals`].
//!
//! A bucket holds, by field name:
//! - each counter of a sample (`requests`, `errors`, `sent`, `delivered`, `bounced`,
//!   `complaints`, `webhooks`, `webhook_errors`): the sum pushed into the bucket;
//! - each gauge (`p99_latency_ms`, `queue_depth`): its latest value, and `<gauge>_n`, how many
//!   reports it had;
//! - `pulled:<guard>`: the latest value pulled for a guard (NaN when the read failed), and
//!   `pulled:<guard>:n`, how many reads.
//!
//! These names are stored (in Redis, with a TTL of a stage's window): replicas of two versions
//! read each other's buckets, so a name changes only with a migration.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::domain::guards::{Guard, MetricSample, WindowTotals, push_recent};

/// One change to a field of a bucket.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Adds to the field (an absent field counts as 0).
    Add(Cow<'static, str>, u64),
    /// Replaces the field's value (NaN: a pulled read that failed).
    Set(Cow<'static, str>, f64),
}

impl Update {
    /// Applies the update to a bucket held as a map, as Redis applies `HINCRBY` and `HSET` to a hash.
    pub fn apply_to(self, bucket: &mut HashMap<String, f64>) {
        match self {
            Update::Add(name, n) => *bucket.entry(name.into_owned()).or_default() += n as f64,
            Update::Set(name, value) => {
                bucket.insert(name.into_owned(), value);
            }
        }
    }
}

/// A counter: its field, where a sample carries it, where the totals sum it.
type Counter = (&'static str, fn(&MetricSample) -> u64, fn(&mut WindowTotals) -> &mut u64);

const COUNTERS: [Counter; 8] = [
    ("requests", |s| s.requests, |t| &mut t.requests),
    ("errors", |s| s.errors, |t| &mut t.errors),
    ("sent", |s| s.sent, |t| &mut t.sent),
    ("delivered", |s| s.delivered, |t| &mut t.delivered),
    ("bounced", |s| s.bounced, |t| &mut t.bounced),
    ("complaints", |s| s.complaints, |t| &mut t.complaints),
    ("webhooks", |s| s.webhooks, |t| &mut t.webhooks),
    ("webhook_errors", |s| s.webhook_errors, |t| &mut t.webhook_errors),
];

/// A gauge: its field, the field counting its reports, where a sample carries it, where the
/// totals keep it.
struct Gauge {
    name: &'static str,
    reports: &'static str,
    value: fn(&MetricSample) -> Option<f64>,
    totals: fn(&mut WindowTotals) -> GaugeTotals<'_>,
}

/// Where the window totals keep one gauge.
struct GaugeTotals<'a> {
    latest: &'a mut Option<f64>,
    recent: &'a mut Vec<f64>,
    reports: &'a mut u64,
}

const GAUGES: [Gauge; 2] = [
    Gauge {
        name: "p99_latency_ms",
        reports: "p99_latency_ms_n",
        value: |s| s.p99_latency_ms,
        totals: |t| GaugeTotals {
            latest: &mut t.p99_latency_ms,
            recent: &mut t.p99_latency_recent,
            reports: &mut t.p99_latency_reports,
        },
    },
    Gauge {
        name: "queue_depth",
        reports: "queue_depth_n",
        value: |s| s.queue_depth,
        totals: |t| GaugeTotals {
            latest: &mut t.queue_depth,
            recent: &mut t.queue_depth_recent,
            reports: &mut t.queue_depth_reports,
        },
    },
];

const PULLED: &str = "pulled:";
const PULLED_READS: &str = ":n";

/// What a pushed sample changes in its bucket: each counter above 0 adds up; each gauge it
/// reports replaces the latest value and counts a report.
pub fn sample_updates(sample: &MetricSample) -> impl Iterator<Item = Update> + '_ {
    let counters = COUNTERS.iter().filter_map(|(name, value, _)| {
        let n = value(sample);
        (n > 0).then_some(Update::Add(Cow::Borrowed(name), n))
    });
    let gauges = GAUGES.iter().filter_map(|gauge| {
        let value = (gauge.value)(sample)?;
        Some([Update::Set(Cow::Borrowed(gauge.name), value), Update::Add(Cow::Borrowed(gauge.reports), 1)])
    });
    counters.chain(gauges.flatten())
}

/// What one value pulled for `guard` changes in its bucket (`None`: the query failed or gave no
/// number, stored as NaN, as is a value that is not finite).
pub fn pulled_updates(guard: Guard, value: Option<f64>) -> [Update; 2] {
    let value = value.filter(|v| v.is_finite()).unwrap_or(f64::NAN);
    [
        Update::Set(Cow::Owned(format!("{PULLED}{guard}")), value),
        Update::Add(Cow::Owned(format!("{PULLED}{guard}{PULLED_READS}")), 1),
    ]
}

/// A stored field, by its name.
enum Field {
    Counter(&'static Counter),
    Gauge(&'static Gauge),
    GaugeReports(&'static Gauge),
    Pulled(Guard),
    PulledReads(Guard),
}

impl Field {
    /// `None` for a name this version does not know: the bucket keeps it, the window skips it.
    fn parse(name: &str) -> Option<Field> {
        if let Some(counter) = COUNTERS.iter().find(|(counter, ..)| *counter == name) {
            return Some(Field::Counter(counter));
        }
        if let Some(gauge) = GAUGES.iter().find(|g| g.name == name) {
            return Some(Field::Gauge(gauge));
        }
        if let Some(gauge) = GAUGES.iter().find(|g| g.reports == name) {
            return Some(Field::GaugeReports(gauge));
        }
        let pulled = name.strip_prefix(PULLED)?;
        match pulled.strip_suffix(PULLED_READS) {
            Some(guard) => Guard::from_name(guard).map(Field::PulledReads),
            None => Guard::from_name(pulled).map(Field::Pulled),
        }
    }
}

/// Adds one bucket's fields, as stored, to `totals`. Buckets are added oldest first, so the last
/// gauge value seen is the latest. Names it does not know are skipped.
pub fn add_bucket<'a>(totals: &mut WindowTotals, fields: impl IntoIterator<Item = (&'a str, f64)>) {
    for (name, value) in fields {
        let n = value as u64;
        match Field::parse(name) {
            Some(Field::Counter((_, _, total))) => *total(totals) += n,
            Some(Field::Gauge(gauge)) => {
                let kept = (gauge.totals)(totals);
                *kept.latest = Some(value);
                push_recent(kept.recent, &[value]);
            }
            Some(Field::GaugeReports(gauge)) => *(gauge.totals)(totals).reports += n,
            Some(Field::Pulled(guard)) => {
                totals.pulled.entry(guard).or_default().latest = value.is_finite().then_some(value)
            }
            Some(Field::PulledReads(guard)) => totals.pulled.entry(guard).or_default().reads += n,
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::{Update, add_bucket, pulled_updates, sample_updates};
    use crate::domain::guards::{Guard, MetricSample, PulledReading, WindowTotals};

    /// One bucket, as the stores fill it: the fields after a few pushed samples and pulled reads.
    fn bucket() -> impl Strategy<Value = HashMap<String, f64>> {
        let count = || prop_oneof![Just(0u64), 1u64..1000];
        let gauge = || prop::option::of(0u32..5000).prop_map(|v| v.map(f64::from));
        let sample = ([count(), count(), count(), count(), count(), count(), count(), count()], gauge(), gauge())
            .prop_map(|(c, p99_latency_ms, queue_depth)| {
                let sample = MetricSample {
                    requests: c[0],
                    errors: c[1],
                    sent: c[2],
                    delivered: c[3],
                    bounced: c[4],
                    complaints: c[5],
                    webhooks: c[6],
                    webhook_errors: c[7],
                    p99_latency_ms,
                    queue_depth,
                    ..MetricSample::default()
                };
                sample_updates(&sample).collect::<Vec<_>>()
            });
        let pulled = (0..Guard::ALL.len(), prop::option::of(0u32..100))
            .prop_map(|(g, v)| pulled_updates(Guard::ALL[g], v.map(f64::from)).to_vec());
        prop::collection::vec(prop_oneof![sample, pulled], 0..6).prop_map(|pushes| {
            let mut fields = HashMap::new();
            for update in pushes.into_iter().flatten() {
                update.apply_to(&mut fields);
            }
            fields
        })
    }

    proptest! {
        /// The Redis store keeps per-bucket totals of sealed buckets and merges them: that must
        /// give exactly the window summed field by field.
        #[test]
        fn merging_per_bucket_totals_equals_summing_the_buckets(buckets in prop::collection::vec(bucket(), 0..12)) {
            let mut summed = WindowTotals::default();
            let mut merged = WindowTotals::default();
            for fields in &buckets {
                add_bucket(&mut summed, fields.iter().map(|(k, v)| (k.as_str(), *v)));
                let mut one = WindowTotals::default();
                add_bucket(&mut one, fields.iter().map(|(k, v)| (k.as_str(), *v)));
                merged.merge(&one);
            }
            prop_assert_eq!(merged, summed);
        }
    }

    /// Stored buckets outlive a deployment: the names written are the ones every version reads.
    #[test]
    fn the_stored_field_names_stay_the_same() {
        let sample = MetricSample {
            requests: 3,
            errors: 0,
            webhook_errors: 2,
            queue_depth: Some(7.0),
            ..MetricSample::default()
        };
        let names: Vec<String> = sample_updates(&sample)
            .chain(pulled_updates(Guard::ErrorRate, None))
            .map(|update| match update {
                Update::Add(name, _) | Update::Set(name, _) => name.into_owned(),
            })
            .collect();
        assert_eq!(
            names,
            ["requests", "webhook_errors", "queue_depth", "queue_depth_n", "pulled:error_rate", "pulled:error_rate:n"]
        );
    }

    #[test]
    fn a_bucket_reads_back_as_what_was_pushed_into_it() {
        let mut fields = HashMap::new();
        for p99 in [Some(12.0), None, Some(30.0)] {
            let sample = MetricSample { requests: 5, errors: 1, p99_latency_ms: p99, ..MetricSample::default() };
            sample_updates(&sample).for_each(|u| u.apply_to(&mut fields));
        }
        pulled_updates(Guard::ErrorRate, Some(0.25)).into_iter().for_each(|u| u.apply_to(&mut fields));
        pulled_updates(Guard::QueueDepth, Some(4.0)).into_iter().for_each(|u| u.apply_to(&mut fields));
        pulled_updates(Guard::QueueDepth, Some(f64::INFINITY)).into_iter().for_each(|u| u.apply_to(&mut fields));
        let mut totals = WindowTotals::default();
        add_bucket(&mut totals, fields.iter().map(|(k, v)| (k.as_str(), *v)));
        assert_eq!((totals.requests, totals.errors), (15, 3));
        assert_eq!(
            (totals.p99_latency_ms, totals.p99_latency_reports, totals.p99_latency_recent.as_slice()),
            (Some(30.0), 2, &[30.0][..])
        );
        assert_eq!(totals.pulled[&Guard::ErrorRate], PulledReading { latest: Some(0.25), reads: 1 });
        assert_eq!(
            totals.pulled[&Guard::QueueDepth],
            PulledReading { latest: None, reads: 2 },
            "the latest read gave no number"
        );
    }
}
