//! Local evaluations per second on one core, per kind of flag.
//! Run: `cargo run --release -p rollout-sdk --example eval_throughput`
//!
//! Kinds: `md5` (bucketing alone, the bound), `plain`, `salted`, `internal` (100 internal users,
//! half the users outside the percentage pay the SHA-256), `unknown` (the default).
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
    // The reference: MD5 bucketing alone, no client; each round measures it and every kind of
    // flag one after the other, so that the ratios compare like with like on a noisy machine.
    let kinds = ["md5", "plain", "salted", "internal", "unknown"];
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let mut rates = vec![Vec::new(); kinds.len()];
    for _ in 0..rounds {
        for (kind, rates) in kinds.iter().zip(&mut rates) {
            let (count, elapsed) = match *kind {
                "md5" => rate(&users, |user| rollout_sdk::user_bucket(None, user) < 50),
                name => rate(&users, |user| client.is_enabled(black_box(name), user)),
            };
            rates.push(count as f64 / elapsed.as_secs_f64() / 1e6);
        }
    }
    println!("one core, {rounds} interleaved rounds of 1 s; ratios to MD5 alone within each round");
    println!("| evaluation | M/s, median | M/s, range | × MD5 alone, median (range) |");
    println!("|---|---:|---:|---:|");
    for (kind, kind_rates) in kinds.iter().zip(&rates) {
        let ratios: Vec<f64> = kind_rates.iter().zip(&rates[0]).map(|(r, md5)| r / md5).collect();
        let (median, low, high) = spread(kind_rates);
        let (ratio, ratio_low, ratio_high) = spread(&ratios);
        println!("| {kind} | {median:.2} | {low:.2} – {high:.2} | {ratio:.2} ({ratio_low:.2} – {ratio_high:.2}) |");
    }
    client.close().await;
    Ok(())
}

/// Median, minimum and maximum.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (sorted[sorted.len() / 2], sorted[0], sorted[sorted.len() - 1])
}

/// Calls `f` over `users` round after round for one second: (calls, time taken).
fn rate(users: &[String], f: impl Fn(&str) -> bool) -> (u64, Duration) {
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        for user in users {
            black_box(f(black_box(user)));
        }
        count += users.len() as u64;
    }
    (count, start.elapsed())
}
