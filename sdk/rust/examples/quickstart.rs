//! Quick start: evaluate a flag locally and report outcomes by cohort.
//! Run against a service: `cargo run -p rollout-sdk --example quickstart -- http://127.0.0.1:8080 customerio`
//! (set ROLLOUT_TOKEN when the service has read tokens).

use std::time::{Duration, Instant};

use rollout_sdk::{Client, Outcome};

#[tokio::main]
async fn main() -> Result<(), rollout_sdk::Error> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let flag = args.next().unwrap_or_else(|| "customerio".into());

    let mut builder = Client::builder(url).default_value(false);
    if let Ok(token) = std::env::var("ROLLOUT_TOKEN") {
        builder = builder.token(token);
    }
    let client = builder.build().await?;

    for user in ["user-1", "alice@example.com", "prod-audit-test"] {
        let started = Instant::now();
        let evaluation = client.evaluation(&flag, user);
        println!("{flag} for {user}: {} ({}, version {:?})", evaluation.enabled, evaluation.reason, evaluation.version);
        // ... serve the request down the path the flag chose, then say how it went:
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        client.record(&flag, user, Outcome { error: false, latency_ms: Some(latency_ms) });
    }

    tokio::time::sleep(Duration::from_millis(100)).await;
    // Pushes the recorded outcomes one last time and stops the background tasks.
    client.close().await;
    println!("dropped reports: {}", client.dropped_reports());
    Ok(())
}
