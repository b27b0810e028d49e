//! Coordination on Redis: the leader lease (a key with a TTL, taken and renewed by a script),
//! de-duplication keys (`SET NX PX`), `PING` and `TIME`.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, Script};

use super::{Conn, RedisStore, bounded};
use crate::store::{Coordination, StoreResult};

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

/// Give the lease up when ours.
const RESIGN_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// The scripts, each hashed once: run by `EVALSHA`, loaded into Redis on its first miss.
static LEAD: LazyLock<Script> = LazyLock::new(|| Script::new(LEAD_SCRIPT));
static RESIGN: LazyLock<Script> = LazyLock::new(|| Script::new(RESIGN_SCRIPT));

/// A TTL as Redis takes it (`PX`, `PEXPIRE`): whole ms, at least 1, since Redis refuses 0.
fn px(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl Coordination for RedisStore {
    fn kind(&self) -> &'static str {
        match self.conn {
            Conn::Single(_) => "redis",
            Conn::Cluster(_) => "redis-cluster",
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: String = bounded(redis::cmd("PING").query_async(&mut conn)).await?;
        Ok(())
    }

    async fn try_lead(&self, holder: &str, ttl: Duration) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let led: i64 = bounded(LEAD.key(self.lease_key()).arg(holder).arg(px(ttl)).invoke_async(&mut conn)).await?;
        Ok(led == 1)
    }

    async fn resign(&self, holder: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = bounded(RESIGN.key(self.lease_key()).arg(holder).invoke_async(&mut conn)).await?;
        Ok(())
    }

    async fn leader(&self) -> StoreResult<Option<String>> {
        let mut conn = self.conn.clone();
        bounded(conn.get(self.lease_key())).await
    }

    async fn remember_once(&self, key: &str, ttl: Duration) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let set: Option<String> = bounded(
            redis::cmd("SET").arg(self.seen_key(key)).arg(1).arg("NX").arg("PX").arg(px(ttl)).query_async(&mut conn),
        )
        .await?;
        Ok(set.is_some())
    }

    async fn forget(&self, key: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = bounded(conn.del(self.seen_key(key))).await?;
        Ok(())
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
