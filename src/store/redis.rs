//! Redis store: one hash per flag, a capped stream of audit events per flag, a pub/sub change feed.
//! The same store runs on one Redis or on a Redis Cluster.
//!
//! Layout (every key of one flag shares the hash tag `{<flag>}`, so a flag's keys live in one
//! cluster slot and its scripts and pipelines never cross slots):
//! - `<prefix>:{<flag>}:flag`        hash `version`, `created` (ms), `doc` (the flag as JSON)
//! - `<prefix>:{<flag>}:history`     stream of `event` (audit events as JSON), trimmed to ~HISTORY_CAP
//! - `<prefix>:{<flag>}:m:<series>:<bucket>` metric buckets (hashes with a TTL)
//! - `<prefix>:flags`                set of flag names (the index); `<prefix>:{catalog}:flags` on a cluster
//! - `<prefix>:generation`           random id set when absent: changes when Redis lost its data;
//!   `<prefix>:{catalog}:generation` on a cluster, where it shares the index's slot, so both live
//!   (and are lost) on the same node and one pipeline reads them together.
//! - `<prefix>:deletions`            stream of `deletion` (deletion records as JSON), trimmed to
//!   ~DELETIONS_CAP: the audit that outlives deleted flags; `<prefix>:{catalog}:deletions` on a cluster
//! - `<prefix>:leader`               the controller lease
//! - `<prefix>:setting:<name>`       settings shared by the replicas (`freeze`: who froze the controller)
//! - `<prefix>:{<flag>}:checks`      hash check name → its latest run (JSON)
//! - channel `<prefix>:changes`      `{"flag","version"}` after every write
//! - on a cluster only: `<prefix>:{<flag>}:deleted`, the flag's deletion epoch (kept a day), and
//!   `<prefix>:{catalog}:fences`, a hash flag → the deletion epoch its latest creation saw
//!
//! ## A stored flag is always listed in the index
//!
//! A full read finds flags through the index only: a flag stored but not listed would be dropped
//! by every replica at its next resync, and stay dropped. On one Redis a write is one script
//! (version check, flag, index entry, history, publish) and so is a deletion (version check,
//! flag, history and index entry removed, deletion recorded, publish): nothing comes between.
//!
//! On a cluster the index lives in the `{catalog}` slot and a flag's keys in the flag's own, and
//! no script spans two slots. A creation takes three steps, a deletion two:
//!
//! - creation 1: read the flag's deletion epoch `e`;
//! - creation 2 (catalog script): list the flag, raise its fence to `e` if lower;
//! - creation 3 (flag script): store the flag if it is absent *and* its epoch is still `e`; if a
//!   deletion moved the epoch meanwhile, start again at 1;
//! - deletion 1 (flag script): remove the flag and its history, move its epoch to `d`, above every
//!   earlier epoch (`max(previous + 1, Redis TIME in ms)`), publish;
//! - deletion 2 (catalog script): unlist the flag unless its fence is `d` or more, record the
//!   deletion.
//!
//! Why a stored flag stays listed: the creation that stored it saw the same epoch `e` at steps 1
//! and 3, so every deletion of that flag ran its first step either before creation 1 (its `d` ≤
//! `e`) or after creation 3 (and then removed the flag). A deletion of the first kind unlists the
//! flag either before creation 2, which lists it again, or after it, where the fence (`e` ≥ `d`)
//! stops it. Listing comes before storing and unlisting after removing, so a full read never
//! misses a flag that replicas already serve; a name listed without its flag (a creation between
//! steps, or one that died there) is skipped by every read, and the next deletion unlists it.
//!
//! On a cluster the change feed is classic pub/sub: a cluster forwards every `PUBLISH` to every
//! node, so one subscription on any node sees all changes. The subscriber connects to the seed
//! nodes in turn, then to the nodes the cluster reports; when its node dies the stream ends and
//! the feed subscribes again through the next one.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use super::{
    Catalog, Change, DELETIONS_CAP, HISTORY_CAP, Stamp, Store, StoreError, StoreResult, Written, add_bucket,
    new_generation, pulled_count_field, pulled_field,
};
use crate::domain::guards::{Guard, MetricSample, MetricSeries, WindowTotals};
use crate::domain::rollout::{AuditEvent, Deletion, Flag};

/// How long one Redis command may take before the store is treated as unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// One Redis: check the version, write the flag, list it in the index (KEYS[3]), append the audit
/// event and publish the change, atomically.
const WRITE_SCRIPT: &str = r"
local found = redis.call('HGET', KEYS[1], 'version') or '0'
if found ~= ARGV[1] then return found end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'doc', ARGV[3], 'created', ARGV[8])
redis.call('SADD', KEYS[3], ARGV[9])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 'OK'
";

/// A cluster, in the flag's slot: [`WRITE_SCRIPT`] without the index. A creation (ARGV[9], the
/// deletion epoch it saw, not empty) lands only if no deletion moved the epoch (KEYS[3]) since.
const SLOT_WRITE_SCRIPT: &str = r"
local found = redis.call('HGET', KEYS[1], 'version') or '0'
if found ~= ARGV[1] then return found end
if ARGV[9] ~= '' and (redis.call('GET', KEYS[3]) or '0') ~= ARGV[9] then return 'deleted' end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'doc', ARGV[3], 'created', ARGV[8])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 'OK'
";

/// What [`SLOT_WRITE_SCRIPT`] answers when a deletion came between a creation's steps.
const DELETED_MEANWHILE: &str = "deleted";

/// One Redis: check the version, remove the flag, its history and its index entry (KEYS[3]),
/// record the deletion (KEYS[4], unless ARGV[4] is empty) and publish it, atomically. Published
/// even when nothing was there: replicas may still serve a flag the store had lost.
const DELETE_SCRIPT: &str = r"
local found = redis.call('HGET', KEYS[1], 'version') or '0'
if found ~= ARGV[1] then return found end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], ARGV[2])
if ARGV[4] ~= '' then redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'deletion', ARGV[4]) end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 'OK'
";

/// A cluster, in the flag's slot: check the version, remove the flag and its history, move its
/// deletion epoch (KEYS[3]) above every earlier one, publish; answers `{'OK', epoch}`, or
/// `{found, ''}` with the version found instead.
const SLOT_DELETE_SCRIPT: &str = r"
local found = redis.call('HGET', KEYS[1], 'version') or '0'
if found ~= ARGV[1] then return {found, ''} end
redis.call('DEL', KEYS[1], KEYS[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = string.format('%.0f', math.max((tonumber(redis.call('GET', KEYS[3])) or 0) + 1, now))
redis.call('SET', KEYS[3], epoch, 'PX', ARGV[4])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {'OK', epoch}
";

/// A cluster, in the catalog's slot, before a creation stores the flag: list it (KEYS[1]) and raise
/// its fence (KEYS[2]) to the deletion epoch the creation saw.
const INDEX_SCRIPT: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > (tonumber(redis.call('HGET', KEYS[2], ARGV[1])) or 0) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
return 1
";

/// A cluster, in the catalog's slot, after a deletion of epoch ARGV[2] removed the flag: unlist it
/// unless a creation that saw this deletion listed it again (its fence is ARGV[2] or more), and
/// record the deletion (KEYS[3], unless ARGV[4] is empty).
const UNINDEX_SCRIPT: &str = r"
if (tonumber(redis.call('HGET', KEYS[2], ARGV[1])) or 0) < tonumber(ARGV[2]) then
  redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
if ARGV[4] ~= '' then redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'deletion', ARGV[4]) end
return 1
";

/// How long a flag's deletion epoch is kept on a cluster. Past it the next deletion's epoch is the
/// Redis time, still above every fence recorded before.
const EPOCH_TTL_MS: u64 = 24 * 3600 * 1000;

/// How many times a creation on a cluster starts over because deletions kept coming between its steps.
const CREATE_ATTEMPTS: usize = 16;

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

/// Where the change feed subscribes.
enum Subscriber {
    Single(redis::Client),
    Cluster {
        seeds: Vec<ConnectionInfo>,
        /// The CA the nodes' certificates are checked against (`rediss://` with a private CA).
        ca_pem: Option<Vec<u8>>,
        /// Rotates the first node tried, so a dead node is not tried first forever.
        next: AtomicUsize,
    },
}

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
struct SealedBuckets {
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

pub struct RedisStore {
    conn: Conn,
    subscriber: Subscriber,
    prefix: String,
    sealed: Mutex<SealedBuckets>,
    write_script: redis::Script,
    slot_write_script: redis::Script,
    delete_script: redis::Script,
    slot_delete_script: redis::Script,
    index_script: redis::Script,
    unindex_script: redis::Script,
    lead_script: redis::Script,
    resign_script: redis::Script,
    append_script: redis::Script,
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

/// The connection settings of `info` at another node's address (same credentials and TLS mode).
fn at_node(info: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match info.addr() {
        ConnectionAddr::TcpTls { insecure, tls_params, .. } => {
            ConnectionAddr::TcpTls { host: host.to_owned(), port, insecure: *insecure, tls_params: tls_params.clone() }
        }
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    info.clone().set_addr(addr)
}

/// `host:port` of every reachable node in a `CLUSTER NODES` reply.
fn cluster_node_addresses(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            if flags.split(',').any(|f| f.starts_with("fail") || f == "noaddr" || f == "handshake") {
                return None;
            }
            // `ip:port@cport[,hostname]`
            let (host, port) = address.split('@').next()?.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?)).filter(|(h, _)| !h.is_empty())
        })
        .collect()
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
        Self {
            conn,
            subscriber,
            prefix: prefix.to_owned(),
            sealed: Mutex::default(),
            write_script: redis::Script::new(WRITE_SCRIPT),
            slot_write_script: redis::Script::new(SLOT_WRITE_SCRIPT),
            delete_script: redis::Script::new(DELETE_SCRIPT),
            slot_delete_script: redis::Script::new(SLOT_DELETE_SCRIPT),
            index_script: redis::Script::new(INDEX_SCRIPT),
            unindex_script: redis::Script::new(UNINDEX_SCRIPT),
            lead_script: redis::Script::new(LEAD_SCRIPT),
            resign_script: redis::Script::new(RESIGN_SCRIPT),
            append_script: redis::Script::new(APPEND_SCRIPT),
        }
    }

    /// A subscription on the one Redis, or on the first cluster node that takes it.
    async fn pubsub(&self) -> StoreResult<PubSub> {
        let (seeds, ca_pem, next) = match &self.subscriber {
            Subscriber::Single(client) => {
                let mut pubsub = bounded(client.get_async_pubsub()).await?;
                bounded(pubsub.subscribe(self.channel())).await?;
                return Ok(pubsub);
            }
            Subscriber::Cluster { seeds, ca_pem, next } => (seeds, ca_pem, next),
        };
        let mut candidates = seeds.clone();
        let first = next.fetch_add(1, Ordering::Relaxed) % candidates.len().max(1);
        candidates.rotate_left(first);
        // Beyond the seeds, every node the cluster reports (when it answers).
        let mut conn = self.conn.clone();
        if let Ok(Ok(nodes)) =
            tokio::time::timeout(COMMAND_TIMEOUT, redis::cmd("CLUSTER").arg("NODES").query_async::<String>(&mut conn))
                .await
            && let Some(template) = seeds.first()
        {
            candidates.extend(cluster_node_addresses(&nodes).iter().map(|(host, port)| at_node(template, host, *port)));
        }
        let mut last = None;
        for info in candidates {
            let attempt = async {
                let mut pubsub = redis_client(info, ca_pem.as_deref())?.get_async_pubsub().await?;
                pubsub.subscribe(self.channel()).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match bounded(attempt).await {
                Ok(pubsub) => return Ok(pubsub),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(StoreError::Timeout(COMMAND_TIMEOUT)))
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

    /// A flag's deletion epoch (cluster only).
    fn epoch_key(&self, flag: &str) -> String {
        format!("{}:{{{flag}}}:deleted", self.prefix)
    }

    fn lease_key(&self) -> String {
        format!("{}:leader", self.prefix)
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

    /// A write script's call: keys flag, history and `third_key`; the arguments every write takes,
    /// then `last`.
    fn write_call<'a>(
        &self,
        script: &'a redis::Script,
        write: &WriteArgs,
        third_key: String,
        last: &str,
    ) -> redis::ScriptInvocation<'a> {
        let flag = write.flag;
        let mut call = script.prepare_invoke();
        call.key(self.flag_key(&flag.name)).key(self.history_key(&flag.name)).key(third_key);
        call.arg(write.expected).arg(flag.state.version).arg(&write.doc).arg(HISTORY_CAP).arg(&write.event);
        call.arg(self.channel()).arg(&write.change).arg(flag.state.created_at).arg(last);
        call
    }

    /// Creates a flag on a cluster: read its deletion epoch, list it with that epoch as its
    /// fence, store it if still absent and not deleted meanwhile (see the module's doc).
    async fn create_on_cluster(&self, write: &WriteArgs<'_>) -> StoreResult<Written> {
        let name = &write.flag.name;
        let mut conn = self.conn.clone();
        for _ in 0..CREATE_ATTEMPTS {
            let epoch: Option<String> = bounded(conn.get(self.epoch_key(name))).await?;
            let epoch = epoch.unwrap_or_else(|| "0".to_owned());
            let _: i64 = bounded(
                self.index_script
                    .key(self.index_key())
                    .key(self.fences_key())
                    .arg(name)
                    .arg(&epoch)
                    .invoke_async(&mut conn),
            )
            .await?;
            let call = self.write_call(&self.slot_write_script, write, self.epoch_key(name), &epoch);
            let answer: String = bounded(call.invoke_async(&mut conn)).await?;
            if answer != DELETED_MEANWHILE {
                return written(&answer, || self.flag_key(name));
            }
        }
        // Deleted again and again while it was being created: absent, as far as this write knows.
        Ok(Written::Conflict { found: 0 })
    }

    /// Deletes a flag on a cluster: remove it and move its deletion epoch on, then unlist it
    /// unless a creation that saw this deletion listed it again (see the module's doc).
    async fn delete_on_cluster(&self, name: &str, expected: u64, record: &str, change: &str) -> StoreResult<Written> {
        let mut conn = self.conn.clone();
        let (answer, epoch): (String, String) = bounded(
            self.slot_delete_script
                .key(self.flag_key(name))
                .key(self.history_key(name))
                .key(self.epoch_key(name))
                .arg(expected)
                .arg(self.channel())
                .arg(change)
                .arg(EPOCH_TTL_MS)
                .invoke_async(&mut conn),
        )
        .await?;
        if answer != "OK" {
            return written(&answer, || self.flag_key(name));
        }
        let _: i64 = bounded(
            self.unindex_script
                .key(self.index_key())
                .key(self.fences_key())
                .key(self.deletions_key())
                .arg(name)
                .arg(epoch)
                .arg(DELETIONS_CAP)
                .arg(record)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(Written::Yes)
    }

    fn decode(&self, name: &str, doc: &str) -> StoreResult<Flag> {
        serde_json::from_str(doc).map_err(|source| StoreError::Corrupt { key: self.flag_key(name), source })
    }
}

/// `value` as JSON; a value that does not serialize is an error, never an empty document.
fn to_json<T: serde::Serialize>(what: &'static str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode { what, source })
}

/// A conditional write's answer: `OK`, or the version found instead in the flag at `key`.
fn written(answer: &str, key: impl FnOnce() -> String) -> StoreResult<Written> {
    match answer {
        "OK" => Ok(Written::Yes),
        found => serde_json::from_str(found)
            .map(|found| Written::Conflict { found })
            .map_err(|source| StoreError::Corrupt { key: key(), source }),
    }
}

/// A write, serialized once: what every write script takes.
struct WriteArgs<'a> {
    flag: &'a Flag,
    expected: u64,
    doc: String,
    event: String,
    change: String,
}

impl<'a> WriteArgs<'a> {
    fn new(flag: &'a Flag, expected: u64, event: &AuditEvent) -> StoreResult<Self> {
        let change = Change { flag: flag.name.clone(), version: flag.state.version };
        Ok(Self {
            flag,
            expected,
            doc: to_json("flag", flag)?,
            event: to_json("audit event", event)?,
            change: to_json("change", &change)?,
        })
    }
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        match self.conn {
            Conn::Single(_) => "redis",
            Conn::Cluster(_) => "redis-cluster",
        }
    }

    #[tracing::instrument(skip_all)]
    async fn load_stamps(&self) -> StoreResult<Catalog> {
        let mut conn = self.conn.clone();
        // Set when absent, then read, with the index in the same round trip (one slot, also on a
        // cluster): a restart between them would break the connection, never pair an old
        // generation with new contents. The snapshot checks the generation again after reading
        // the flags themselves.
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
        let keys = names.iter().map(|name| self.flag_key(name)).collect();
        let stamps: Vec<(Option<u64>, Option<i64>)> = read_each(&self.conn, keys, |key| {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(key).arg("version").arg("created");
            cmd
        })
        .await?;
        let mut catalog = Catalog { generation, stamps: Vec::with_capacity(names.len()), missing: Vec::new() };
        for (name, (version, created_at)) in names.into_iter().zip(stamps) {
            match version {
                Some(version) => catalog.stamps.push(Stamp { name, version, created_at }),
                None => catalog.missing.push(name),
            }
        }
        Ok(catalog)
    }

    async fn generation(&self) -> StoreResult<Option<String>> {
        let mut conn = self.conn.clone();
        bounded(conn.get(self.generation_key())).await
    }

    #[tracing::instrument(skip_all, fields(flag = name))]
    async fn get_flag(&self, name: &str) -> StoreResult<Option<Flag>> {
        let mut conn = self.conn.clone();
        let doc: Option<String> = bounded(conn.hget(self.flag_key(name), "doc")).await?;
        doc.map(|d| self.decode(name, &d)).transpose()
    }

    #[tracing::instrument(skip_all, fields(flags = names.len()))]
    async fn get_flags(&self, names: &[String]) -> StoreResult<Vec<Flag>> {
        let keys = names.iter().map(|name| self.flag_key(name)).collect();
        let docs: Vec<Option<String>> = read_each(&self.conn, keys, |key| {
            let mut cmd = redis::cmd("HGET");
            cmd.arg(key).arg("doc");
            cmd
        })
        .await?;
        let mut flags = Vec::with_capacity(names.len());
        for (name, doc) in names.iter().zip(docs) {
            // A name without a document is a flag deleted meanwhile.
            if let Some(doc) = doc {
                flags.push(self.decode(name, &doc)?);
            }
        }
        Ok(flags)
    }

    #[tracing::instrument(skip_all, fields(flag = %flag.name))]
    async fn write_flag(&self, flag: &Flag, expected: u64, event: &AuditEvent) -> StoreResult<Written> {
        let write = WriteArgs::new(flag, expected, event)?;
        let mut conn = self.conn.clone();
        let answer: String = match (&self.conn, expected) {
            (Conn::Single(_), _) => {
                let call = self.write_call(&self.write_script, &write, self.index_key(), &flag.name);
                bounded(call.invoke_async(&mut conn)).await?
            }
            (Conn::Cluster(_), 0) => return self.create_on_cluster(&write).await,
            (Conn::Cluster(_), _) => {
                let call = self.write_call(&self.slot_write_script, &write, self.epoch_key(&flag.name), "");
                bounded(call.invoke_async(&mut conn)).await?
            }
        };
        written(&answer, || self.flag_key(&flag.name))
    }

    #[tracing::instrument(skip_all, fields(flag = name))]
    async fn delete_flag(&self, name: &str, expected: u64, record: Option<&Deletion>) -> StoreResult<Written> {
        let change = to_json("change", &Change { flag: name.to_owned(), version: 0 })?;
        let record = match record {
            Some(record) => to_json("deletion record", record)?,
            // The scripts take an empty record as none.
            None => String::new(),
        };
        let mut conn = self.conn.clone();
        if let Conn::Cluster(_) = self.conn {
            return self.delete_on_cluster(name, expected, &record, &change).await;
        }
        let answer: String = bounded(
            self.delete_script
                .key(self.flag_key(name))
                .key(self.history_key(name))
                .key(self.index_key())
                .key(self.deletions_key())
                .arg(expected)
                .arg(name)
                .arg(DELETIONS_CAP)
                .arg(&record)
                .arg(self.channel())
                .arg(&change)
                .invoke_async(&mut conn),
        )
        .await?;
        written(&answer, || self.flag_key(name))
    }

    async fn deletions(&self, limit: usize) -> StoreResult<Vec<Deletion>> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply =
            bounded(conn.xrevrange_count(self.deletions_key(), "+", "-", limit)).await?;
        let mut records = Vec::with_capacity(reply.ids.len());
        for entry in reply.ids {
            if let Some(record) = entry.get::<String>("deletion") {
                let record = serde_json::from_str(&record)
                    .map_err(|source| StoreError::Corrupt { key: self.deletions_key(), source })?;
                records.push(record);
            }
        }
        Ok(records)
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
        Ok(self
            .pubsub()
            .await?
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
                    add_bucket(&mut one, fields.iter().filter_map(|(k, v)| Some((k.as_str(), v.parse::<f64>().ok()?))));
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
                .arg(to_json("audit event", event)?)
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

    async fn put_setting(&self, name: &str, value: Option<&str>) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let key = format!("{}:setting:{name}", self.prefix);
        match value {
            Some(value) => bounded(conn.set::<_, _, ()>(key, value)).await,
            None => bounded(conn.del::<_, ()>(key)).await,
        }
    }

    async fn setting(&self, name: &str) -> StoreResult<Option<String>> {
        let mut conn = self.conn.clone();
        bounded(conn.get(format!("{}:setting:{name}", self.prefix))).await
    }

    async fn put_check_run(&self, flag: &str, check: &str, run: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        bounded(conn.hset::<_, _, _, ()>(format!("{}:{{{flag}}}:checks", self.prefix), check, run)).await
    }

    async fn check_runs(&self, flag: &str) -> StoreResult<Vec<(String, String)>> {
        let mut conn = self.conn.clone();
        bounded(conn.hgetall(format!("{}:{{{flag}}}:checks", self.prefix))).await
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

    #[test]
    fn a_value_that_does_not_serialize_is_an_error_never_an_empty_document() {
        // JSON object keys must be strings: a map keyed by pairs cannot be written.
        let unwritable: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
        assert!(matches!(to_json("flag", &unwritable), Err(StoreError::Encode { what: "flag", .. })));
        assert_eq!(
            to_json("change", &Change { flag: "f".into(), version: 2 }).ok().as_deref(),
            Some(r#"{"flag":"f","version":2}"#)
        );
    }

    #[test]
    fn cluster_nodes_lists_reachable_nodes_only() {
        let reply = "\
07c3 127.0.0.1:30004@31004 myself,master - 0 0 1 connected 0-5460
67ed 127.0.0.1:30002@31002,node-b.example master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@31003 master,fail - 1426238317741 1426238316232 3 connected 10923-16383
6ec2 :0@0 master,noaddr - 0 0 4 disconnected
e7d1 10.0.0.7:6379@16379 slave 07c3 0 1426238317741 1 connected
";
        assert_eq!(
            cluster_node_addresses(reply),
            [("127.0.0.1".to_owned(), 30004), ("127.0.0.1".to_owned(), 30002), ("10.0.0.7".to_owned(), 6379)]
        );
    }

    #[test]
    fn another_node_keeps_the_credentials() {
        let seed = "redis://:secret@seed.example:7000/".into_connection_info().expect("url");
        let moved = at_node(&seed, "10.0.0.2", 7001);
        assert!(matches!(moved.addr(), ConnectionAddr::Tcp(host, 7001) if host == "10.0.0.2"));
        assert_eq!(moved.redis_settings().password(), Some("secret"));
    }
}
