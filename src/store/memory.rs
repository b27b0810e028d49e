//! The embedded store: state in this process only. For single-process use and trying it out.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

use super::{Change, HISTORY_CAP, Store, StoreResult, Written};
use crate::domain::rollout::{AuditEvent, Flag};

struct Entry {
    flag: Flag,
    history: VecDeque<AuditEvent>,
}

pub struct MemoryStore {
    flags: Mutex<HashMap<String, Entry>>,
    changes: broadcast::Sender<Change>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            flags: Mutex::new(HashMap::new()),
            changes: broadcast::channel(1024).0,
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave a half-written entry (each write is one insert),
        // so the data is still sound after poisoning.
        self.flags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, flag: &str, version: u64) {
        // No receivers is fine: nobody is listening yet.
        let _ = self.changes.send(Change {
            flag: flag.to_owned(),
            version,
        });
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn list_flags(&self) -> StoreResult<Vec<Flag>> {
        Ok(self.lock().values().map(|e| e.flag.clone()).collect())
    }

    async fn get_flag(&self, name: &str) -> StoreResult<Option<Flag>> {
        Ok(self.lock().get(name).map(|e| e.flag.clone()))
    }

    async fn write_flag(
        &self,
        flag: &Flag,
        expected: u64,
        event: &AuditEvent,
    ) -> StoreResult<Written> {
        {
            let mut flags = self.lock();
            let found = flags.get(&flag.name).map_or(0, |e| e.flag.state.version);
            if found != expected {
                return Ok(Written::Conflict { found });
            }
            let entry = flags.entry(flag.name.clone()).or_insert_with(|| Entry {
                flag: flag.clone(),
                history: VecDeque::new(),
            });
            entry.flag = flag.clone();
            entry.history.push_front(event.clone());
            entry.history.truncate(HISTORY_CAP);
        }
        self.publish(&flag.name, flag.state.version);
        Ok(Written::Yes)
    }

    async fn delete_flag(&self, name: &str) -> StoreResult<bool> {
        let removed = self.lock().remove(name).is_some();
        if removed {
            self.publish(name, 0);
        }
        Ok(removed)
    }

    async fn history(&self, name: &str, limit: usize) -> StoreResult<Vec<AuditEvent>> {
        Ok(self
            .lock()
            .get(name)
            .map(|e| e.history.iter().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn subscribe(&self) -> StoreResult<BoxStream<'static, Change>> {
        let receiver = self.changes.subscribe();
        Ok(futures::stream::unfold(receiver, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(change) => return Some((change, rx)),
                    // Missed messages are repaired by the periodic full re-read.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed())
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}
