//! Redis store: one hash per flag, a capped stream of audit events per flag, a pub/sub change feed.
//!
//! Layout (every key of one flag shares the hash tag `{<flag>}`, so it works on Redis Cluster):
//! - `<prefix>:{<flag>}:flag`    hash `version`, `doc` (the flag as JSON)
//! - `<prefix>:{<flag>}:history` stream of `event` (audit events as JSON), trimmed to ~HISTORY_CAP
//! - `<prefix>:flags`            set of flag names (the index)
//! - `<prefix>:generation`       random id set when absent: changes when Redis lost its data
//! - channel `<prefix>:changes`  `{"flag","version"}` after every write

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{
    Catalog, Change, HISTORY_CAP, Store, StoreError, StoreResult, Written, add_bucket, new_generation,
    pulled_count_field, pulled_field,
};
use crate::domain::guards::{Guard, MetricSample, MetricSeries, WindowTotals};
use crate::domain::rollout::{AuditEvent, Flag};

/// How long one Redis command may take before the store is treated as unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Check the version, write the flag, append the audit event and publish the change, atomically.
const WRITE_SCRIPT: &str = r"
local found = redis.call('HGET', KEYS[1], 'version') or '0'
if found ~= ARGV[1] then return found end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'doc', ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 'OK'
";

/// Published even when nothing was there: replicas may still serve a flag the store had lost.
const DELETE_SCRIPT: &str = r"
local n = redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
";

/// Take the lease when free, renew it when ours.
const LEAD_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if current then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Append to the history of an existing flag only (never resurrect a deleted flag's stream).
const APPEND_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[2])
return 1
";

const RESIGN_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    write_script: redis::Script,
    delete_script: redis::Script,
    lead_script: redis::Script,
    resign_script: redis::Script,
    append_script: redis::Script,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

async fn bounded<T>(fut: impl Future<Output = redis::RedisResult<T>>) -> StoreResult<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(StoreError::Timeout(COMMAND_TIMEOUT)),
    }
}

impl RedisStore {
    /// Connects lazily: the service starts (and serves nothing stale) even while Redis is down.
    pub fn connect(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        Self::connect_with_ca(url, prefix, None)
    }

    /// Like [`RedisStore::connect`]; for `rediss://`, `ca_pem` (a PEM certificate) replaces the
    /// public roots the server's certificate is checked against.
    pub fn connect_with_ca(url: &str, prefix: &str, ca_pem: Option<Vec<u8>>) -> Result<Self, redis::RedisError> {
        let client = match ca_pem {
            Some(root_cert) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) },
            )?,
            None => redis::Client::open(url)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self {
            client,
            conn,
            prefix: prefix.to_owned(),
            write_script: redis::Script::new(WRITE_SCRIPT),
            delete_script: redis::Script::new(DELETE_SCRIPT),
            lead_script: redis::Script::new(LEAD_SCRIPT),
            resign_script: redis::Script::new(RESIGN_SCRIPT),
            append_script: redis::Script::new(APPEND_SCRIPT),
        })
    }

    fn flag_key(&self, flag: &str) -> String {
        format!("{}:{{{flag}}}:flag", self.prefix)
    }

    fn history_key(&self, flag: &str) -> String {
        format!("{}:{{{flag}}}:history", self.prefix)
    }

    fn bucket_key(&self, flag: &str, series: &MetricSeries, bucket: i64) -> String {
        format!("{}:{{{flag}}}:m:{}:{bucket}", self.prefix, series.id)
    }

    fn lease_key(&self) -> String {
        format!("{}:leader", self.prefix)
    }

    fn index_key(&self) -> String {
        format!("{}:flags", self.prefix)
    }

    fn generation_key(&self) -> String {
        format!("{}:generation", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}:changes", self.prefix)
    }

    /// The flags of these names (a name without a document is a flag deleted meanwhile).
    async fn list_named(&self, conn: &mut ConnectionManager, names: &[String]) -> StoreResult<Vec<Flag>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for name in names {
            pipe.hget(self.flag_key(name), "doc");
        }
        let docs: Vec<Option<String>> = bounded(pipe.query_async(conn)).await?;
        let mut flags = Vec::with_capacity(names.len());
        for (name, doc) in names.iter().zip(docs) {
            if let Some(doc) = doc {
                flags.push(self.decode(name, &doc)?);
            }
        }
        Ok(flags)
    }

    fn decode(&self, name: &str, doc: &str) -> StoreResult<Flag> {
        serde_json::from_str(doc).map_err(|source| StoreError::Corrupt { key: self.flag_key(name), source })
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Our own plain data types always serialize.
    serde_json::to_string(value).unwrap_or_default()
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    #[tracing::instrument(skip_all)]
    async fn list_flags(&self) -> StoreResult<Vec<Flag>> {
        let mut conn = self.conn.clone();
        let names: Vec<String> = bounded(conn.smembers(self.index_key())).await?;
        self.list_named(&mut conn, &names).await
    }

    #[tracing::instrument(skip_all)]
    async fn load_all(&self) -> StoreResult<Catalog> {
        let mut conn = self.conn.clone();
        loop {
            // Set when absent, then read, with the index in the same round trip: a restart between
            // them would break the connection, never pair an old generation with new contents.
            let (generation, names): (String, Vec<String>) = bounded(
                redis::pipe()
                    .cmd("SET")
                    .arg(self.generation_key())
                    .arg(new_generation())
                    .arg("NX")
                    .ignore()
                    .get(self.generation_key())
                    .smembers(self.index_key())
                    .query_async(&mut conn),
            )
            .await?;
            let flags = self.list_named(&mut conn, &names).await?;
            // Flushed between the two reads: read again rather than file flags under the wrong generation.
            let after: Option<String> = bounded(conn.get(self.generation_key())).await?;
            if after.as_deref() == Some(generation.as_str()) {
                return Ok(Catalog { generation, flags });
            }
        }
    }

    #[tracing::instrument(skip_all, fields(flag = name))]
    async fn get_flag(&self, name: &str) -> StoreResult<Option<Flag>> {
        let mut conn = self.conn.clone();
        let doc: Option<String> = bounded(conn.hget(self.flag_key(name), "doc")).await?;
        doc.map(|d| self.decode(name, &d)).transpose()
    }

    #[tracing::instrument(skip_all, fields(flag = %flag.name))]
    async fn write_flag(&self, flag: &Flag, expected: u64, event: &AuditEvent) -> StoreResult<Written> {
        let mut conn = self.conn.clone();
        let change = Change { flag: flag.name.clone(), version: flag.state.version };
        let answer: String = bounded(
            self.write_script
                .key(self.flag_key(&flag.name))
                .key(self.history_key(&flag.name))
                .arg(expected)
                .arg(flag.state.version)
                .arg(to_json(flag))
                .arg(HISTORY_CAP)
                .arg(to_json(event))
                .arg(self.channel())
                .arg(to_json(&change))
                .invoke_async(&mut conn),
        )
        .await?;
        if answer != "OK" {
            return Ok(Written::Conflict { found: answer.parse().unwrap_or(0) });
        }
        if expected == 0 {
            // The index lives in its own hash slot, so it cannot join the script on a cluster.
            let _: i64 = bounded(conn.sadd(self.index_key(), &flag.name)).await?;
        }
        Ok(Written::Yes)
    }

    #[tracing::instrument(skip_all, fields(flag = name))]
    async fn delete_flag(&self, name: &str) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let change = Change { flag: name.to_owned(), version: 0 };
        let removed: i64 = bounded(
            self.delete_script
                .key(self.flag_key(name))
                .key(self.history_key(name))
                .arg(self.channel())
                .arg(to_json(&change))
                .invoke_async(&mut conn),
        )
        .await?;
        let _: i64 = bounded(conn.srem(self.index_key(), name)).await?;
        Ok(removed > 0)
    }

    #[tracing::instrument(skip_all, fields(flag = name))]
    async fn history(&self, name: &str, limit: usize) -> StoreResult<Vec<AuditEvent>> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply =
            bounded(conn.xrevrange_count(self.history_key(name), "+", "-", limit)).await?;
        let mut events = Vec::with_capacity(reply.ids.len());
        for entry in reply.ids {
            if let Some(event) = entry.get::<String>("event") {
                let event = serde_json::from_str(&event)
                    .map_err(|source| StoreError::Corrupt { key: self.history_key(name), source })?;
                events.push(event);
            }
        }
        Ok(events)
    }

    async fn subscribe(&self) -> StoreResult<BoxStream<'static, Change>> {
        let mut pubsub = bounded(self.client.get_async_pubsub()).await?;
        bounded(pubsub.subscribe(self.channel())).await?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|msg| async move { serde_json::from_slice::<Change>(msg.get_payload_bytes()).ok() })
            .boxed())
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: String = bounded(redis::cmd("PING").query_async(&mut conn)).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(flag))]
    async fn record_metrics(
        &self,
        flag: &str,
        series: &MetricSeries,
        now_ms: i64,
        sample: &MetricSample,
    ) -> StoreResult<()> {
        let key = self.bucket_key(flag, series, series.bucket_of(now_ms));
        let mut pipe = redis::pipe();
        for (name, value) in sample.counters() {
            if value > 0 {
                pipe.hincr(&key, name, value).ignore();
            }
        }
        for (name, count_name, value) in [
            ("p99_latency_ms", "p99_latency_ms_n", sample.p99_latency_ms),
            ("queue_depth", "queue_depth_n", sample.queue_depth),
        ] {
            if let Some(v) = value {
                pipe.hset(&key, name, v).ignore();
                pipe.hincr(&key, count_name, 1).ignore();
            }
        }
        pipe.expire(&key, i64::try_from(series.ttl_secs).unwrap_or(i64::MAX)).ignore();
        let mut conn = self.conn.clone();
        bounded(pipe.query_async::<()>(&mut conn)).await
    }

    #[tracing::instrument(skip_all, fields(flag))]
    async fn read_window(
        &self,
        flag: &str,
        series: &MetricSeries,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<WindowTotals> {
        let mut pipe = redis::pipe();
        for bucket in series.bucket_of(from_ms)..=series.bucket_of(to_ms) {
            pipe.hgetall(self.bucket_key(flag, series, bucket));
        }
        let mut conn = self.conn.clone();
        let buckets: Vec<Vec<(String, String)>> = bounded(pipe.query_async(&mut conn)).await?;
        let mut totals = WindowTotals::default();
        for fields in &buckets {
            add_bucket(&mut totals, fields.iter().filter_map(|(k, v)| Some((k.as_str(), v.parse::<f64>().ok()?))));
        }
        Ok(totals)
    }

    async fn record_pulled(
        &self,
        flag: &str,
        series: &MetricSeries,
        now_ms: i64,
        guard: Guard,
        value: Option<f64>,
    ) -> StoreResult<()> {
        let key = self.bucket_key(flag, series, series.bucket_of(now_ms));
        let stored = value.filter(|v| v.is_finite()).map_or_else(|| "nan".to_owned(), |v| v.to_string());
        let mut pipe = redis::pipe();
        pipe.hset(&key, pulled_field(guard), stored).ignore();
        pipe.hincr(&key, pulled_count_field(guard), 1).ignore();
        pipe.expire(&key, i64::try_from(series.ttl_secs).unwrap_or(i64::MAX)).ignore();
        let mut conn = self.conn.clone();
        bounded(pipe.query_async::<()>(&mut conn)).await
    }

    async fn remember_once(&self, key: &str, ttl: Duration) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = bounded(
            redis::cmd("SET")
                .arg(format!("{}:seen:{key}", self.prefix))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut conn),
        )
        .await?;
        Ok(set.is_some())
    }

    async fn forget(&self, key: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = bounded(conn.del(format!("{}:seen:{key}", self.prefix))).await?;
        Ok(())
    }

    async fn append_history(&self, flag: &str, event: &AuditEvent) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = bounded(
            self.append_script
                .key(self.flag_key(flag))
                .key(self.history_key(flag))
                .arg(HISTORY_CAP)
                .arg(to_json(event))
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    async fn try_lead(&self, holder: &str, ttl: Duration) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let led: i64 =
            bounded(self.lead_script.key(self.lease_key()).arg(holder).arg(ttl_ms).invoke_async(&mut conn)).await?;
        Ok(led == 1)
    }

    async fn resign(&self, holder: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = bounded(self.resign_script.key(self.lease_key()).arg(holder).invoke_async(&mut conn)).await?;
        Ok(())
    }

    async fn leader(&self) -> StoreResult<Option<String>> {
        let mut conn = self.conn.clone();
        bounded(conn.get(self.lease_key())).await
    }

    async fn time_ms(&self) -> StoreResult<Option<i64>> {
        let mut conn = self.conn.clone();
        let (secs, micros): (i64, i64) = bounded(redis::cmd("TIME").query_async(&mut conn)).await?;
        Ok(Some(secs.saturating_mul(1000).saturating_add(micros / 1000)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rediss_urls_with_a_password_are_accepted_and_connect_lazily() {
        for url in ["rediss://:s3cret@redis.example.com:6380/0", "rediss://user:s3cret@10.0.0.9/", "redis://:pw@host/2"]
        {
            assert!(RedisStore::connect(url, "rollout").is_ok(), "{url}");
        }
        assert!(RedisStore::connect("http://host/", "rollout").is_err());
        let pem = b"-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n".to_vec();
        assert!(RedisStore::connect_with_ca("rediss://host/", "rollout", Some(pem)).is_err(), "a broken CA is refused");
    }
}
