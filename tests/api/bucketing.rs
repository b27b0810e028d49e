//! Bucketing agrees with the runbook's Node function and behaves as a percentage should.

use proptest::prelude::*;
use rollout_controller::domain::bucket::{bucket, in_rollout, user_bucket};

#[test]
fn agrees_with_the_runbook_node_function_on_every_committed_vector() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/buckets.json"))
        .expect("tests/vectors/buckets.json (node tests/vectors/generate.mjs)");
    let vectors: Vec<(String, u8)> = serde_json::from_str(&text).expect("vector file");
    assert!(vectors.len() >= 10_000, "only {} vectors", vectors.len());
    assert!(vectors.iter().filter(|(id, _)| !id.is_ascii()).count() > 1000, "non-ASCII ids must be covered");
    for (id, expected) in &vectors {
        assert_eq!(user_bucket(None, id), *expected, "user id {id:?}");
    }
}

#[test]
fn zero_percent_is_nobody_and_hundred_is_everybody() {
    for i in 0..10_000 {
        let b = bucket(format!("u{i}").as_bytes());
        assert!(!in_rollout(b, 0));
        assert!(in_rollout(b, 100));
    }
}

#[test]
fn share_is_within_one_point_of_the_percent_over_100k_ids() {
    let buckets: Vec<u8> = (0..100_000).map(|i| bucket(format!("user-{i}").as_bytes())).collect();
    for percent in [1u8, 5, 10, 25, 50, 75, 90, 99] {
        let share = buckets.iter().filter(|&&b| in_rollout(b, percent)).count() as f64 / 1000.0;
        assert!((share - f64::from(percent)).abs() <= 1.0, "{percent}% selected {share}%");
    }
}

#[test]
fn a_salt_picks_different_users() {
    let same = (0..10_000)
        .filter(|i| {
            let user = format!("user-{i}");
            in_rollout(user_bucket(None, &user), 10) == in_rollout(user_bucket(Some("other-flag"), &user), 10)
        })
        .count();
    // Independent 10% selections agree on ~82% of users; identical ones on 100%.
    assert!(same < 8_600, "salted and unsalted selections agree on {same} of 10000 users");
}

proptest! {
    #[test]
    fn raising_the_percent_only_adds_users(user in any::<String>(), salt in proptest::option::of("[a-z]{1,8}"), p in 0u8..=100, q in 0u8..=100) {
        let b = user_bucket(salt.as_deref(), &user);
        prop_assert!(b < 100);
        if in_rollout(b, p.min(q)) {
            prop_assert!(in_rollout(b, p.max(q)));
        }
    }

    #[test]
    fn bucket_is_a_pure_function_of_salt_and_user(user in any::<String>(), salt in "[a-z]{1,8}") {
        prop_assert_eq!(user_bucket(Some(&salt), &user), bucket(format!("{salt}:{user}").as_bytes()));
        prop_assert_eq!(user_bucket(None, &user), bucket(user.as_bytes()));
    }
}
