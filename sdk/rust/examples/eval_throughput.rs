//! Local evaluations per second on one core, per kind of flag.
//! Run: `cargo run --release -p rollout-sdk --example eval_throughput`
//!
//! The client is built offline from a bootstrap file (its URL points at a closed port), so the
//! figure is evaluation alone: a read lock, a map lookup, MD5 (and SHA-256 for flags with
//! internal users).

use std::hint::black_box;
use std::time::{Duration, Instant};

use rollout_sdk::{Client, ConfigBody, FlagConfig, Status};

fn flag(name: &str, salt: Option<&str>, internal: usize) -> FlagConfig {
    FlagConfig {
        name: name.into(),
        version: 1,
        status: Status::Running,
        stage: "half".into(),
        percent: 50,
        salt: salt.map(Into::into),
        // Digests of ids no benchmark user has: every evaluation pays the SHA-256 and misses.
        internal_users_sha256: (0..internal).map(|i| format!("{i:064x}")).collect(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let body =
        ConfigBody { flags: vec![flag("plain", None, 0), flag("salted", Some("s1"), 0), flag("internal", None, 100)] };
    let path = std::env::temp_dir().join(format!("rollout-sdk-bench-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec(&body)?)?;
    let client = Client::builder("http://127.0.0.1:9").bootstrap_file(&path).build().await?;
    std::fs::remove_file(&path)?;
    let users: Vec<String> = (0..4096).map(|i| format!("user-{i}@example.com")).collect();
    // The bound: MD5 bucketing alone, no client (compare the lines below with this one).
    let (count, elapsed) = rate(&users, |user| rollout_sdk::user_bucket(None, user) < 50);
    println!("{:>9}: {:>6.2} M buckets/s (MD5 alone, the bound)", "md5", count as f64 / elapsed.as_secs_f64() / 1e6);
    for name in ["plain", "salted", "internal", "unknown"] {
        let (count, elapsed) = rate(&users, |user| client.is_enabled(black_box(name), user));
        println!(
            "{name:>9}: {:>6.2} M evaluations/s (one core, {count} evaluations)",
            count as f64 / elapsed.as_secs_f64() / 1e6
        );
    }
    client.close().await;
    Ok(())
}

/// Calls `f` over `users` round after round for two seconds: (calls, time taken).
fn rate(users: &[String], f: impl Fn(&str) -> bool) -> (u64, Duration) {
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        for user in users {
            black_box(f(black_box(user)));
        }
        count += users.len() as u64;
    }
    (count, start.elapsed())
}
