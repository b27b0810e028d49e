//! Local evaluation: the service's rules (`GET /flags/{flag}/users/{user}`) bit for bit. Pure.

use md5::{Digest, Md5};
use sha2::Sha256;

use crate::config::{CompiledFlag, Snapshot};

/// Why a user got their answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The flag serves nobody (pending, scheduled or rolled back).
    FlagOff,
    /// The user is on the flag's internal list.
    InternalUser,
    /// The user's bucket is below the flag's percentage.
    InRollout,
    /// The user's bucket is at or above the flag's percentage.
    NotInRollout,
    /// The flag is unknown (or no configuration has arrived yet): the default was answered.
    Default,
}

impl Reason {
    /// The reason as the service spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::FlagOff => "flag_off",
            Reason::InternalUser => "internal_user",
            Reason::InRollout => "in_rollout",
            Reason::NotInRollout => "not_in_rollout",
            Reason::Default => "default",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An answer with its explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    pub enabled: bool,
    pub reason: Reason,
    /// The flag's version the answer came from; `None` when the default was answered.
    pub version: Option<u64>,
}

/// Bucket of a raw key: `u32::from_be_bytes(md5(key)[0..4]) % 100` (the runbook's hashing).
pub fn bucket(key: &[u8]) -> u8 {
    finish(Md5::new().chain_update(key))
}

/// Bucket of a user for a flag: the user id alone without a salt, `"{salt}:{user}"` with one.
pub fn user_bucket(salt: Option<&str>, user: &str) -> u8 {
    match salt {
        None => bucket(user.as_bytes()),
        Some(salt) => finish(Md5::new().chain_update(salt.as_bytes()).chain_update(b":").chain_update(user.as_bytes())),
    }
}

fn finish(hasher: Md5) -> u8 {
    let digest = hasher.finalize();
    let head = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    // The remainder of a division by 100 always fits in a u8.
    (head % 100) as u8
}

/// Evaluates `flag` for `user` against a snapshot; an unknown flag answers `default`.
pub(crate) fn evaluate(snapshot: &Snapshot, flag: &str, user: &str, default: bool) -> Evaluation {
    match snapshot.flags.get(flag) {
        Some(compiled) => evaluate_flag(compiled, user),
        None => Evaluation { enabled: default, reason: Reason::Default, version: None },
    }
}

/// Whether `flag` is on for `user`: the same answer as [`evaluate`]'s `enabled`, found with less
/// work. A user inside the percentage is on whatever the internal list says, so the list's
/// SHA-256 is only paid for users outside it, and a flag at 100% needs no hash at all.
pub(crate) fn is_enabled(snapshot: &Snapshot, flag: &str, user: &str, default: bool) -> bool {
    let Some(flag) = snapshot.flags.get(flag) else { return default };
    let config = &flag.config;
    if !config.status.serves() {
        return false;
    }
    if config.percent >= 100 || user_bucket(config.salt.as_deref(), user) < config.percent {
        return true;
    }
    is_internal(flag, user)
}

/// Whether `user` is on the flag's internal list; the SHA-256 is only paid when it has one.
fn is_internal(flag: &CompiledFlag, user: &str) -> bool {
    !flag.internal.is_empty() && flag.internal.contains(&<[u8; 32]>::from(Sha256::digest(user.as_bytes())))
}

fn evaluate_flag(flag: &CompiledFlag, user: &str) -> Evaluation {
    let config = &flag.config;
    let answer = |enabled, reason| Evaluation { enabled, reason, version: Some(config.version) };
    if !config.status.serves() {
        return answer(false, Reason::FlagOff);
    }
    if is_internal(flag, user) {
        return answer(true, Reason::InternalUser);
    }
    if user_bucket(config.salt.as_deref(), user) < config.percent {
        answer(true, Reason::InRollout)
    } else {
        answer(false, Reason::NotInRollout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigBody, FlagConfig, Status};

    fn sha256_hex(user: &str) -> String {
        hex::encode(Sha256::digest(user.as_bytes()))
    }

    fn flag(name: &str, status: Status, percent: u8, salt: Option<&str>, internal: &[&str]) -> FlagConfig {
        FlagConfig {
            name: name.into(),
            version: 7,
            status,
            stage: "stage".into(),
            percent,
            salt: salt.map(Into::into),
            internal_users_sha256: internal.iter().map(|u| sha256_hex(u)).collect(),
        }
    }

    fn snapshot(flags: Vec<FlagConfig>) -> Snapshot {
        Snapshot::from_body(ConfigBody { flags })
    }

    #[test]
    fn buckets_agree_with_the_runbook_node_function_on_every_committed_vector() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/buckets.json");
        let text = std::fs::read_to_string(path).expect("tests/vectors/buckets.json of the repository");
        let vectors: Vec<(String, u8)> = serde_json::from_str(&text).expect("vector file");
        assert!(vectors.len() >= 10_000, "only {} vectors", vectors.len());
        assert!(vectors.iter().filter(|(id, _)| !id.is_ascii()).count() > 1000, "non-ASCII ids must be covered");
        for (id, expected) in &vectors {
            assert_eq!(user_bucket(None, id), *expected, "user id {id:?}");
        }
    }

    #[test]
    fn a_salted_bucket_hashes_salt_colon_user() {
        for user in ["user-1", "alice@example.com", "日本語", ""] {
            assert_eq!(user_bucket(Some("s1"), user), bucket(format!("s1:{user}").as_bytes()));
        }
        let moved = (0..1000).filter(|i| {
            let user = format!("user-{i}");
            user_bucket(Some("s1"), &user) != user_bucket(None, &user)
        });
        assert!(moved.count() > 900, "a salt must reshuffle the buckets");
    }

    #[test]
    fn percent_selects_exactly_the_users_below_it() {
        let snap = snapshot(vec![flag("f", Status::Running, 30, None, &[])]);
        for i in 0..10_000 {
            let user = format!("user-{i}");
            let e = evaluate(&snap, "f", &user, false);
            assert_eq!(e.enabled, bucket(user.as_bytes()) < 30, "{user}");
            assert_eq!(e.reason, if e.enabled { Reason::InRollout } else { Reason::NotInRollout });
            assert_eq!(e.version, Some(7));
        }
    }

    #[test]
    fn zero_percent_is_nobody_and_hundred_everybody() {
        let snap =
            snapshot(vec![flag("none", Status::Running, 0, None, &[]), flag("all", Status::Completed, 100, None, &[])]);
        for i in 0..2_000 {
            let user = format!("u{i}");
            assert!(!evaluate(&snap, "none", &user, true).enabled);
            assert!(evaluate(&snap, "all", &user, false).enabled);
        }
    }

    #[test]
    fn salted_flags_use_the_salted_bucket() {
        let snap = snapshot(vec![flag("f", Status::Running, 50, Some("s1"), &[])]);
        let disagreements = (0..10_000)
            .map(|i| format!("user-{i}"))
            .inspect(|user| {
                assert_eq!(evaluate(&snap, "f", user, false).enabled, user_bucket(Some("s1"), user) < 50);
            })
            .filter(|user| evaluate(&snap, "f", user, false).enabled != (bucket(user.as_bytes()) < 50))
            .count();
        assert!(disagreements > 3_000, "the salt must change who is selected ({disagreements})");
    }

    #[test]
    fn internal_users_are_enabled_while_the_flag_serves_and_off_when_rolled_back() {
        // user-13 has bucket 3: outside a 1% rollout, so only the internal list can enable it.
        assert_eq!(bucket(b"user-13"), 3);
        for status in [Status::Running, Status::Paused, Status::Completed] {
            let snap = snapshot(vec![flag("f", status, 1, None, &["user-13"])]);
            let e = evaluate(&snap, "f", "user-13", false);
            assert_eq!((e.enabled, e.reason), (true, Reason::InternalUser), "{status:?}");
            assert_eq!(evaluate(&snap, "f", "user-12", false).reason, Reason::NotInRollout);
        }
        for status in [Status::Pending, Status::Scheduled, Status::RolledBack] {
            let snap = snapshot(vec![flag("f", status, 100, None, &["user-13"])]);
            for user in ["user-13", "user-1", "anyone"] {
                let e = evaluate(&snap, "f", user, true);
                assert_eq!((e.enabled, e.reason, e.version), (false, Reason::FlagOff, Some(7)), "{status:?}");
            }
        }
    }

    #[test]
    fn the_short_answer_equals_the_full_evaluation_in_every_state() {
        let mut flags = Vec::new();
        for (i, status) in [Status::Pending, Status::Running, Status::Paused, Status::RolledBack, Status::Completed]
            .into_iter()
            .enumerate()
        {
            for percent in [0, 1, 37, 99, 100] {
                for salt in [None, Some("s1")] {
                    let name = format!("f{i}-{percent}-{}", salt.is_some());
                    flags.push(flag(&name, status, percent, salt, &["user-13", "user-500", "ann@corp"]));
                }
            }
        }
        let names: Vec<String> = flags.iter().map(|f| f.name.clone()).collect();
        let snap = snapshot(flags);
        for name in names.iter().map(String::as_str).chain(["unknown"]) {
            for i in 0..1_000 {
                let user = if i == 999 { "ann@corp".to_owned() } else { format!("user-{i}") };
                for default in [false, true] {
                    let full = evaluate(&snap, name, &user, default).enabled;
                    assert_eq!(is_enabled(&snap, name, &user, default), full, "{name} {user} {default}");
                }
            }
        }
    }

    #[test]
    fn an_unknown_flag_answers_the_default_without_a_version() {
        let snap = snapshot(vec![flag("f", Status::Running, 100, None, &[])]);
        for default in [false, true] {
            let e = evaluate(&snap, "other", "user-1", default);
            assert_eq!(e, Evaluation { enabled: default, reason: Reason::Default, version: None });
        }
        assert_eq!(evaluate(&Snapshot::default(), "f", "user-1", true).reason, Reason::Default);
    }

    #[test]
    fn reasons_are_spelled_like_the_service() {
        let spelled: Vec<&str> =
            [Reason::FlagOff, Reason::InternalUser, Reason::InRollout, Reason::NotInRollout, Reason::Default]
                .iter()
                .map(|r| r.as_str())
                .collect();
        assert_eq!(spelled, ["flag_off", "internal_user", "in_rollout", "not_in_rollout", "default"]);
    }
}
