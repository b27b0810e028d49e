//! The flag configuration the service publishes (`GET /flags/config`, `/stream`) and the
//! immutable, evaluation-ready snapshot the client builds from it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A flag's lifecycle state, as the service reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Scheduled,
    Running,
    Paused,
    RolledBack,
    Completed,
}

impl Status {
    /// Whether the flag serves anyone at all (internal users first): running, paused or completed.
    pub fn serves(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Completed)
    }
}

/// One flag's evaluation configuration, exactly as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagConfig {
    pub name: String,
    pub version: u64,
    pub status: Status,
    pub stage: String,
    /// What the service evaluates with (0 when pending, scheduled or rolled back).
    pub percent: u8,
    #[serde(default)]
    pub salt: Option<String>,
    /// Lowercase hex SHA-256 of each internal user id's UTF-8 bytes.
    #[serde(default)]
    pub internal_users_sha256: Vec<String>,
}

/// The body of `GET /flags/config` and of the stream's `snapshot` event; also the bootstrap file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConfigBody {
    pub flags: Vec<FlagConfig>,
}

/// The data of a stream `change` event: a flag's new configuration, or its deletion.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Upsert(FlagConfig),
    Deleted(String),
}

impl Change {
    /// Parses a `change` event's data: `{"name", "deleted": true}` or a full [`FlagConfig`].
    pub fn parse(data: &str) -> Result<Change, serde_json::Error> {
        #[derive(Deserialize)]
        struct Tombstone {
            name: String,
            #[serde(default)]
            deleted: bool,
        }
        let value: serde_json::Value = serde_json::from_str(data)?;
        if value.get("deleted").is_some() {
            let tombstone: Tombstone = serde_json::from_value(value)?;
            if tombstone.deleted {
                return Ok(Change::Deleted(tombstone.name));
            }
            return Err(serde::de::Error::custom("\"deleted\" is present but not true"));
        }
        serde_json::from_value(value).map(Change::Upsert)
    }
}

/// A flag ready to evaluate: its wire form plus the internal digests as a set of raw bytes.
#[derive(Debug, Clone)]
pub(crate) struct CompiledFlag {
    pub config: FlagConfig,
    pub internal: HashSet<[u8; 32]>,
}

impl CompiledFlag {
    fn new(config: FlagConfig) -> CompiledFlag {
        // A digest that is not 64 hex digits cannot match any user: it is skipped, not fatal.
        let internal = config
            .internal_users_sha256
            .iter()
            .filter_map(|h| {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(h, &mut digest).ok().map(|()| digest)
            })
            .collect();
        CompiledFlag { config, internal }
    }
}

/// Every known flag by name. Immutable: a change builds a new snapshot.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub flags: HashMap<String, Arc<CompiledFlag>>,
}

impl Snapshot {
    pub fn from_body(body: ConfigBody) -> Snapshot {
        let flags = body.flags.into_iter().map(|f| (f.name.clone(), Arc::new(CompiledFlag::new(f)))).collect();
        Snapshot { flags }
    }

    /// A new snapshot with one change applied; the flags it does not touch are shared.
    pub fn with_change(&self, change: Change) -> Snapshot {
        let mut flags = self.flags.clone();
        match change {
            Change::Upsert(config) => {
                flags.insert(config.name.clone(), Arc::new(CompiledFlag::new(config)));
            }
            Change::Deleted(name) => {
                flags.remove(&name);
            }
        }
        Snapshot { flags }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_event_is_either_a_tombstone_or_a_full_flag() {
        assert_eq!(Change::parse(r#"{"name": "a", "deleted": true}"#).ok(), Some(Change::Deleted("a".into())));
        let upsert = Change::parse(
            r#"{"name":"a","version":3,"status":"running","stage":"s1","percent":5,"salt":null,"internal_users_sha256":[]}"#,
        );
        assert!(matches!(upsert, Ok(Change::Upsert(FlagConfig { version: 3, percent: 5, .. }))));
        assert!(Change::parse(r#"{"name": "a", "deleted": false}"#).is_err());
        assert!(Change::parse(r#"{"name": "a"}"#).is_err());
        assert!(Change::parse("not json").is_err());
    }

    #[test]
    fn malformed_digests_are_skipped_and_the_rest_kept() {
        let good = "a".repeat(64);
        let config = FlagConfig {
            name: "f".into(),
            version: 1,
            status: Status::Running,
            stage: "s".into(),
            percent: 0,
            salt: None,
            internal_users_sha256: vec![good, "zz".into(), "ab".into()],
        };
        assert_eq!(CompiledFlag::new(config).internal.len(), 1);
    }
}
