//! Flags on Redis: documents, the index, history, the deletion audit and the change feed's
//! messages, written by Lua scripts so that each change is atomic on one Redis.
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

use std::sync::LazyLock;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use redis::{AsyncCommands, Script};

use super::{Conn, RedisStore, bounded, read_each};
use crate::domain::rollout::{AuditEvent, Deletion, Flag};
use crate::store::{
    Catalog, Change, DELETIONS_CAP, FlagStore, HISTORY_CAP, Stamp, StoreError, StoreResult, Written, new_generation,
};

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

/// One Redis: check the version, remove the flag, its history, its guard history (KEYS[5]) and its index entry (KEYS[3]),
/// record the deletion (KEYS[4], unless ARGV[4] is empty) and publish it, atomically. Published
/// even when nothing was there: replicas may still serve a flag the store had lost.
const DELETE_SCRIPT: &str = r"
local found = redis.call('HGET', KEYS[1], 'version') or '0'
if found ~= ARGV[1] then return found end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[5])
redis.call('SREM', KEYS[3], ARGV[2])
if ARGV[4] ~= '' then redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'deletion', ARGV[4]) end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 'OK'
";

/// A cluster, in the flag's slot: check the version, remove the flag, its history and its guard
/// history (KEYS[4]), move its deletion epoch (KEYS[3]) above every earlier one, publish; answers `{'OK', epoch}`, or
/// `{found, ''}` with the version found instead.
const SLOT_DELETE_SCRIPT: &str = r"
local found = redis.call('HGET', KEYS[1], 'version') or '0'
if found ~= ARGV[1] then return {found, ''} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
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

/// Append to the history of an existing flag only (never resurrect a deleted flag's stream).
const APPEND_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[2])
return 1
";

/// The scripts, each hashed once: run by `EVALSHA`, loaded into Redis on its first miss.
static WRITE: LazyLock<Script> = LazyLock::new(|| Script::new(WRITE_SCRIPT));
static SLOT_WRITE: LazyLock<Script> = LazyLock::new(|| Script::new(SLOT_WRITE_SCRIPT));
static DELETE: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE_SCRIPT));
static SLOT_DELETE: LazyLock<Script> = LazyLock::new(|| Script::new(SLOT_DELETE_SCRIPT));
static INDEX: LazyLock<Script> = LazyLock::new(|| Script::new(INDEX_SCRIPT));
static UNINDEX: LazyLock<Script> = LazyLock::new(|| Script::new(UNINDEX_SCRIPT));
static APPEND: LazyLock<Script> = LazyLock::new(|| Script::new(APPEND_SCRIPT));

impl RedisStore {
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
                INDEX.key(self.index_key()).key(self.fences_key()).arg(name).arg(&epoch).invoke_async(&mut conn),
            )
            .await?;
            let call = self.write_call(&SLOT_WRITE, write, self.epoch_key(name), &epoch);
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
            SLOT_DELETE
                .key(self.flag_key(name))
                .key(self.history_key(name))
                .key(self.epoch_key(name))
                .key(self.guard_history_key(name))
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
            UNINDEX
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
impl FlagStore for RedisStore {
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
                let call = self.write_call(&WRITE, &write, self.index_key(), &flag.name);
                bounded(call.invoke_async(&mut conn)).await?
            }
            (Conn::Cluster(_), 0) => return self.create_on_cluster(&write).await,
            (Conn::Cluster(_), _) => {
                let call = self.write_call(&SLOT_WRITE, &write, self.epoch_key(&flag.name), "");
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
            DELETE
                .key(self.flag_key(name))
                .key(self.history_key(name))
                .key(self.index_key())
                .key(self.deletions_key())
                .key(self.guard_history_key(name))
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

    async fn append_history(&self, flag: &str, event: &AuditEvent) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = bounded(
            APPEND
                .key(self.flag_key(flag))
                .key(self.history_key(flag))
                .arg(HISTORY_CAP)
                .arg(to_json("audit event", event)?)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    async fn subscribe(&self) -> StoreResult<BoxStream<'static, Change>> {
        Ok(self
            .pubsub()
            .await?
            .into_on_message()
            .filter_map(|msg| async move { serde_json::from_slice::<Change>(msg.get_payload_bytes()).ok() })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::to_json;
    use crate::store::{Change, StoreError};

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
}
