//! MD5 bucketing: which users a percentage selects. Pure, allocation-free.

use md5::{Digest, Md5};

/// Bucket of a raw key: `u32::from_be_bytes(md5(key)[0..4]) % 100`.
///
/// Bit-for-bit the runbook's `parseInt(md5hex.substring(0, 8), 16) % 100`.
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

/// The exact bytes that are hashed for a user (for `explain`).
pub fn hashed_key(salt: Option<&str>, user: &str) -> String {
    match salt {
        None => user.to_owned(),
        Some(salt) => format!("{salt}:{user}"),
    }
}

/// Whether a bucket falls inside a rollout percentage.
pub fn in_rollout(bucket: u8, percent: u8) -> bool {
    bucket < percent
}

fn finish(hasher: Md5) -> u8 {
    let digest = hasher.finalize();
    let head = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    // The remainder of a division by 100 always fits in a u8.
    (head % 100) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runbook_known_values() {
        assert_eq!(bucket(b"prod-audit-test"), 49);
        assert_eq!(bucket(b"user-1"), 19);
        assert_eq!(bucket(b"alice@example.com"), 36);
        assert_eq!(bucket(b"smoke-test-1700000000"), 57);
        assert_eq!(bucket(b""), 93);
    }

    #[test]
    fn salt_is_prefixed_with_a_colon() {
        assert_eq!(user_bucket(Some("s"), "u"), bucket(b"s:u"));
        assert_eq!(user_bucket(None, "user-1"), 19);
        assert_eq!(hashed_key(Some("s"), "u"), "s:u");
    }
}
