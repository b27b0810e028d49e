//! Metric windows on Redis: each bucket a hash of the fields [`fields`] spells, expiring with its
//! series; window reads keep the totals of sealed buckets, so a tick fetches only the newest few.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use redis::{AsyncCommands, Script};

use super::{RedisStore, bounded, lock};
use crate::domain::guards::{Guard, HealthPoint, MetricSample, MetricSeries, WindowTotals};
use crate::store::fields::{self, Update};
use crate::store::{GUARD_HISTORY_CAP, GUARD_HISTORY_TTL, MetricStore, StoreError, StoreResult};

/// Appends a guard reading (ARGV[2], `<stage_version> <json>`) to a flag's guard history (KEYS[2],
/// a list, oldest first) if the flag (KEYS[1]) exists: the list starts anew when its newest entry
/// is of another stage entry (its prefix is not ARGV[1], `<stage_version> `); past ARGV[3] entries
/// every other one is dropped, the newest kept; the list expires ARGV[4] ms after its last write.
const RECORD_HEALTH_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last = redis.call('LINDEX', KEYS[2], -1)
if last and string.sub(last, 1, #ARGV[1]) ~= ARGV[1] then redis.call('DEL', KEYS[2]) end
local n = redis.call('RPUSH', KEYS[2], ARGV[2])
if n > tonumber(ARGV[3]) then
  local all = redis.call('LRANGE', KEYS[2], 0, -1)
  local kept = {}
  local first = 2 - (n % 2)
  for i = first, n, 2 do kept[#kept + 1] = all[i] end
  redis.call('DEL', KEYS[2])
  redis.call('RPUSH', KEYS[2], unpack(kept))
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
";

static RECORD_HEALTH: LazyLock<Script> = LazyLock::new(|| Script::new(RECORD_HEALTH_SCRIPT));

/// How long after a metric bucket's end a push may still land in it: the pushing replica's clock
/// a little behind the reader's, a push in flight. Past that the bucket is sealed, and the store
/// reads it from Redis once.
const SEAL_AFTER_MS: i64 = 10_000;

/// How often, by the readers' clock, totals of expired buckets are dropped.
const PRUNE_EVERY_MS: i64 = 60_000;

/// Bucket totals of the sealed metric buckets, per series. The leader re-reads every running
/// flag's window at every tick: with these it fetches only the last few buckets (3–4 instead of up
/// to 61).
#[derive(Default)]
pub(super) struct SealedBuckets {
    /// By `<flag>/<series id>` (flag names have no `/`).
    series: HashMap<String, SealedSeries>,
    pruned_at_ms: i64,
}

impl SealedBuckets {
    /// Drops the series whose newest sealed bucket has expired in Redis (its stage is over).
    fn prune(&mut self, now_ms: i64) {
        if now_ms.saturating_sub(self.pruned_at_ms) >= PRUNE_EVERY_MS {
            self.series.retain(|_, s| s.expires_at_ms > now_ms);
            self.pruned_at_ms = now_ms;
        }
    }
}

/// Consecutive sealed buckets of one series, from bucket `first`.
struct SealedSeries {
    first: i64,
    /// `None` for a bucket nobody pushed to, as most are: it costs one pointer.
    buckets: VecDeque<Option<Arc<WindowTotals>>>,
    /// When the newest of them expires in Redis.
    expires_at_ms: i64,
}

impl SealedSeries {
    fn get(&self, bucket: i64) -> Option<&Option<Arc<WindowTotals>>> {
        self.buckets.get(usize::try_from(bucket.checked_sub(self.first)?).ok()?)
    }

    /// Forgets the buckets before `bucket`: the window has moved past them.
    fn drop_before(&mut self, bucket: i64) {
        while self.first < bucket && self.buckets.pop_front().is_some() {
            self.first += 1;
        }
        if self.buckets.is_empty() {
            self.first = bucket;
        }
    }

    /// Keeps `bucket`'s totals when it follows the last one kept (the run stays consecutive).
    fn push(&mut self, bucket: i64, totals: Option<Arc<WindowTotals>>, expires_at_ms: i64) {
        if self.buckets.is_empty() {
            self.first = bucket;
        }
        if i64::try_from(self.buckets.len()).is_ok_and(|n| self.first.saturating_add(n) == bucket) {
            self.buckets.push_back(totals);
            self.expires_at_ms = expires_at_ms;
        }
    }
}

impl RedisStore {
    /// Applies `updates` to the series' bucket of `now_ms` and restarts its TTL, in one round trip.
    async fn update_bucket(
        &self,
        flag: &str,
        series: &MetricSeries,
        now_ms: i64,
        updates: impl IntoIterator<Item = Update>,
    ) -> StoreResult<()> {
        let key = self.bucket_key(flag, series, series.bucket_of(now_ms));
        let mut pipe = redis::pipe();
        for update in updates {
            match update {
                Update::Add(field, n) => pipe.hincr(&key, field.as_ref(), n).ignore(),
                Update::Set(field, value) if value.is_finite() => pipe.hset(&key, field.as_ref(), value).ignore(),
                // A failed read: stored as `nan`, which reads back as NaN.
                Update::Set(field, _) => pipe.hset(&key, field.as_ref(), "nan").ignore(),
            };
        }
        pipe.expire(&key, i64::try_from(series.ttl_secs).unwrap_or(i64::MAX)).ignore();
        let mut conn = self.conn.clone();
        bounded(pipe.query_async::<()>(&mut conn)).await
    }
}

#[async_trait]
impl MetricStore for RedisStore {
    #[tracing::instrument(skip_all, fields(flag))]
    async fn record_metrics(
        &self,
        flag: &str,
        series: &MetricSeries,
        now_ms: i64,
        sample: &MetricSample,
    ) -> StoreResult<()> {
        self.update_bucket(flag, series, now_ms, fields::sample_updates(sample)).await
    }

    async fn record_pulled(
        &self,
        flag: &str,
        series: &MetricSeries,
        now_ms: i64,
        guard: Guard,
        value: Option<f64>,
    ) -> StoreResult<()> {
        self.update_bucket(flag, series, now_ms, fields::pulled_updates(guard, value)).await
    }

    #[tracing::instrument(skip_all, fields(flag))]
    async fn read_window(
        &self,
        flag: &str,
        series: &MetricSeries,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<WindowTotals> {
        let buckets: Vec<i64> = (series.bucket_of(from_ms)..=series.bucket_of(to_ms)).collect();
        let Some(&first) = buckets.first() else {
            // A window that ends before it begins (a stage entered by a replica whose clock runs ahead).
            return Ok(WindowTotals::default());
        };
        let id = format!("{flag}/{}", series.id);
        // Per bucket: `Some(totals)` when known (`Some(None)`: known empty), `None` to fetch.
        let mut parts: Vec<Option<Option<Arc<WindowTotals>>>> = {
            let mut sealed = lock(&self.sealed);
            match sealed.series.get_mut(&id) {
                Some(kept) => {
                    kept.drop_before(first);
                    buckets.iter().map(|&b| kept.get(b).cloned()).collect()
                }
                None => vec![None; buckets.len()],
            }
        };
        let unread: Vec<usize> = (0..parts.len()).filter(|&i| parts[i].is_none()).collect();
        if !unread.is_empty() {
            let mut pipe = redis::pipe();
            for &i in &unread {
                pipe.hgetall(self.bucket_key(flag, series, buckets[i]));
            }
            let mut conn = self.conn.clone();
            let read: Vec<Vec<(String, String)>> = bounded(pipe.query_async(&mut conn)).await?;
            let sealed_below = series.bucket_of(to_ms.saturating_sub(SEAL_AFTER_MS));
            let ttl_ms = i64::try_from(series.ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            let mut sealed = lock(&self.sealed);
            for (&i, fields) in unread.iter().zip(&read) {
                let totals = (!fields.is_empty()).then(|| {
                    let mut one = WindowTotals::default();
                    fields::add_bucket(
                        &mut one,
                        fields.iter().filter_map(|(k, v)| Some((k.as_str(), v.parse::<f64>().ok()?))),
                    );
                    Arc::new(one)
                });
                let bucket = buckets[i];
                if bucket < sealed_below {
                    let expires_at_ms =
                        bucket.saturating_add(1).saturating_mul(series.bucket_ms).saturating_add(ttl_ms);
                    let kept = sealed.series.entry(id.clone()).or_insert_with(|| SealedSeries {
                        first: bucket,
                        buckets: VecDeque::new(),
                        expires_at_ms,
                    });
                    kept.push(bucket, totals.clone(), expires_at_ms);
                }
                parts[i] = Some(totals);
            }
            sealed.prune(to_ms);
        }
        let mut totals = WindowTotals::default();
        for part in parts.iter().flatten().flatten() {
            totals.merge(part);
        }
        Ok(totals)
    }

    #[tracing::instrument(skip_all, fields(flag))]
    async fn record_health(&self, flag: &str, point: &HealthPoint) -> StoreResult<()> {
        let json =
            serde_json::to_string(point).map_err(|source| StoreError::Encode { what: "guard reading", source })?;
        let stage = format!("{} ", point.stage_version);
        let ttl_ms = u64::try_from(GUARD_HISTORY_TTL.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        let _: i64 = bounded(
            RECORD_HEALTH
                .key(self.flag_key(flag))
                .key(self.guard_history_key(flag))
                .arg(&stage)
                .arg(format!("{stage}{json}"))
                .arg(GUARD_HISTORY_CAP)
                .arg(ttl_ms)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(flag))]
    async fn health_history(&self, flag: &str) -> StoreResult<Vec<HealthPoint>> {
        let key = self.guard_history_key(flag);
        let mut conn = self.conn.clone();
        let entries: Vec<String> = bounded(conn.lrange(&key, 0, -1)).await?;
        entries
            .iter()
            .map(|entry| {
                let json = entry.split_once(' ').map_or(entry.as_str(), |(_, json)| json);
                serde_json::from_str(json).map_err(|source| StoreError::Corrupt { key: key.clone(), source })
            })
            .collect()
    }
}
