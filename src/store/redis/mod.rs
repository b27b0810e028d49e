//! The Redis store, on one Redis or on a Redis Cluster: one hash per flag, a capped stream of
//! audit events per flag, metric buckets as hashes with a TTL, a pub/sub change feed.
//!
//! Layout (every key of one flag shares the hash tag `{<flag>}`, so a flag's keys live in one
//! cluster slot and its scripts and pipelines never cross slots):
//! - `<prefix>:{<flag>}:flag`        hash `version`, `created` (ms), `doc` (the flag as JSON)
//! - `<prefix>:{<flag>}:history`     stream of `event` (audit events as JSON), trimmed to ~HISTORY_CAP
//! - `<prefix>:{<flag>}:m:<series>:<bucket>` metric buckets (hashes with a TTL; their fields are
//!   spelled in `store/fields.rs`)
//! - `<prefix>:flags`                set of flag names (the index); `<prefix>:{catalog}:flags` on a cluster
//! - `<prefix>:generation`           random id set when absent: changes when Redis lost its data;
//!   `<prefix>:{catalog}:generation` on a cluster, where it shares the index's slot, so both live
//!   (and are lost) on the same node and one pipeline reads them together.
//! - `<prefix>:deletions`            stream of `deletion` (deletion records as JSON), trimmed to
//!   ~DELETIONS_CAP: the audit that outlives deleted flags; `<prefix>:{catalog}:deletions` on a cluster
//! - `<prefix>:leader`               the controller lease
//! - `<prefix>:setting:<name>`       settings shared by the replicas (`freeze`: who froze the controller;
//!   `first_start`: when the store's first start was, see `Rollouts::first_start`)
//! - `<prefix>:{<flag>}:guards`      list of the current stage's guard readings (`<stage_version> <json>`),
//!   oldest first, thinned past GUARD_HISTORY_CAP, expiring GUARD_HISTORY_TTL after its last write
//! - `<prefix>:{<flag>}:checks`      hash check name → its latest run (JSON)
//! - `<prefix>:seen:<key>`           a de-duplication key (`remember_once`), expiring with its TTL
//! - channel `<prefix>:changes`      `{"flag","version"}` after every write
//! - on a cluster only: `<prefix>:{<flag>}:deleted`, the flag's deletion epoch (kept a day), and
//!   `<prefix>:{catalog}:fences`, a hash flag → the deletion epoch its latest creation saw
//!
//! One file per capability, each with the Lua scripts it runs: `flags.rs` (`FlagStore`, and why a
//! stored flag is always listed in the index on a cluster), `metrics.rs` (`MetricStore`: bucket
//! writes, window reads that keep sealed buckets), `coordination.rs` (`Coordination`: lease,
//! de-duplication keys, `PING`, `TIME`), and `feed.rs`, where the change feed subscribes. This
//! file connects and names the keys.

use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use self::feed::Subscriber;
use self::metrics::SealedBuckets;
use super::{StoreError, StoreResult};
use crate::domain::guards::MetricSeries;

mod coordination;
mod feed;
mod flags;
mod metrics;

/// How long one Redis command may take before the store is treated as unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads of many flags on a cluster: one command per flag (their keys live in different slots),
/// this many in flight.
const CLUSTER_READ_CONCURRENCY: usize = 64;

/// Where commands go: one Redis through a reconnecting manager, or a cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<LazyCluster>),
}

/// A cluster connection made on first use (and again after a failed attempt), so the service
/// starts, and serves its snapshot, while the cluster is unreachable.
struct LazyCluster {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn connection(&self) -> redis::RedisResult<ClusterConnection> {
        self.conn.get_or_try_init(|| self.client.get_async_connection()).await.cloned()
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(lazy) => Box::pin(async move { lazy.connection().await?.req_packed_command(cmd).await }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(lazy) => {
                Box::pin(async move { lazy.connection().await?.req_packed_commands(pipeline, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            // A cluster has only database 0.
            Conn::Cluster(_) => 0,
        }
    }
}

/// One read command per key (`command` builds it): pipelined on one Redis, concurrent on a
/// cluster, where a pipeline may not cross slots. Replies in the order of `keys`.
async fn read_each<T: redis::FromRedisValue + Send + 'static>(
    conn: &Conn,
    keys: Vec<String>,
    command: fn(String) -> Cmd,
) -> StoreResult<Vec<T>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = conn.clone();
    match &conn {
        Conn::Single(_) => {
            let mut pipe = redis::pipe();
            for key in keys {
                pipe.add_command(command(key));
            }
            bounded(pipe.query_async(&mut conn)).await
        }
        Conn::Cluster(_) => {
            let reads = futures::stream::iter(keys.into_iter().map(|key| {
                let (mut conn, cmd) = (conn.clone(), command(key));
                async move { bounded(cmd.query_async::<T>(&mut conn)).await }
            }));
            reads.buffered(CLUSTER_READ_CONCURRENCY).try_collect().await
        }
    }
}

pub struct RedisStore {
    conn: Conn,
    subscriber: Subscriber,
    prefix: String,
    sealed: Mutex<SealedBuckets>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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

fn redis_client(info: impl IntoConnectionInfo, ca_pem: Option<&[u8]>) -> redis::RedisResult<redis::Client> {
    match ca_pem {
        Some(root_cert) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert.to_vec()) },
        ),
        None => redis::Client::open(info),
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
        let client = redis_client(url, ca_pem.as_deref())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self::with(Conn::Single(conn), Subscriber::Single(client), prefix))
    }

    /// A Redis Cluster, found through any of the `seeds` (`redis://` or `rediss://` URLs of its
    /// nodes); `ca_pem` as in [`RedisStore::connect_with_ca`]. Connects lazily, like
    /// [`RedisStore::connect`].
    pub fn connect_cluster(seeds: &[&str], prefix: &str, ca_pem: Option<Vec<u8>>) -> Result<Self, redis::RedisError> {
        let seeds = seeds.iter().map(|url| url.into_connection_info()).collect::<Result<Vec<_>, _>>()?;
        if seeds.is_empty() {
            return Err(redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no cluster seed URL given")));
        }
        let mut builder = ClusterClientBuilder::new(seeds.clone())
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(COMMAND_TIMEOUT)
            .retries(2);
        if let Some(root_cert) = &ca_pem {
            // Checked here, as for one Redis, rather than on the first connection.
            redis_client(seeds[0].clone(), Some(root_cert))?;
            builder = builder.certs(redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert.clone()) });
        }
        let lazy = LazyCluster { client: builder.build()?, conn: tokio::sync::OnceCell::new() };
        let subscriber = Subscriber::Cluster { seeds, ca_pem, next: AtomicUsize::new(0) };
        Ok(Self::with(Conn::Cluster(Arc::new(lazy)), subscriber, prefix))
    }

    fn with(conn: Conn, subscriber: Subscriber, prefix: &str) -> Self {
        Self { conn, subscriber, prefix: prefix.to_owned(), sealed: Mutex::default() }
    }

    fn flag_key(&self, flag: &str) -> String {
        format!("{}:{{{flag}}}:flag", self.prefix)
    }

    fn history_key(&self, flag: &str) -> String {
        format!("{}:{{{flag}}}:history", self.prefix)
    }

    fn guard_history_key(&self, flag: &str) -> String {
        format!("{}:{{{flag}}}:guards", self.prefix)
    }

    fn bucket_key(&self, flag: &str, series: &MetricSeries, bucket: i64) -> String {
        format!("{}:{{{flag}}}:m:{}:{bucket}", self.prefix, series.id)
    }

    /// A flag's deletion epoch (cluster only).
    fn epoch_key(&self, flag: &str) -> String {
        format!("{}:{{{flag}}}:deleted", self.prefix)
    }

    fn lease_key(&self) -> String {
        format!("{}:leader", self.prefix)
    }

    fn seen_key(&self, key: &str) -> String {
        format!("{}:seen:{key}", self.prefix)
    }

    /// The index and the generation: on a cluster they share the `{catalog}` hash tag (one slot,
    /// one pipeline); on one Redis they keep the names they had before clusters were supported, so
    /// an existing deployment finds its flags after an upgrade.
    fn catalog_key(&self, name: &str) -> String {
        match self.conn {
            Conn::Single(_) => format!("{}:{name}", self.prefix),
            Conn::Cluster(_) => format!("{}:{{catalog}}:{name}", self.prefix),
        }
    }

    fn index_key(&self) -> String {
        self.catalog_key("flags")
    }

    fn generation_key(&self) -> String {
        self.catalog_key("generation")
    }

    fn deletions_key(&self) -> String {
        self.catalog_key("deletions")
    }

    /// Per flag, the deletion epoch its latest creation saw (cluster only).
    fn fences_key(&self) -> String {
        self.catalog_key("fences")
    }

    fn channel(&self) -> String {
        format!("{}:changes", self.prefix)
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
        assert!(
            RedisStore::connect_with_ca("rediss://host/", "rollout", Some(pem.clone())).is_err(),
            "a broken CA is refused"
        );
        assert!(
            RedisStore::connect_cluster(&["rediss://h1:7000/"], "rollout", Some(pem)).is_err(),
            "also on a cluster"
        );
        assert!(RedisStore::connect_cluster(&[], "rollout", None).is_err(), "a cluster needs a seed");
        assert!(RedisStore::connect_cluster(&["redis://h1:7000/", "redis://h2:7000/"], "rollout", None).is_ok());
    }
}
