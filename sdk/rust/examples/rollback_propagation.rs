//! How fast a rollback reaches SDK clients: `CLIENTS` clients (default 100) connected to the
//! replicas given after the first, the flag `propagation` (running at 100%) rolled back through
//! the first replica; per client, the time from the start of the rollback request until that
//! client answers `false`. Then the flag is resumed (not measured), `ROUNDS` times (default 50).
//! Prints p50, p99 and max over every client of every round.
//!
//! Run by `scripts/bench-clients.sh`, which starts Redis and three replicas and creates the flag:
//! `rollback_propagation ADMIN_TOKEN URL_A URL_B [URL_C …]`.

use std::time::{Duration, Instant};

use rollout_sdk::Client;
use tokio::task::JoinSet;

const FLAG: &str = "propagation";
const USER: &str = "user-1";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [token, writer, readers @ ..] = args.as_slice() else {
        return Err("usage: rollback_propagation ADMIN_TOKEN URL_A URL_B [URL_C …]".into());
    };
    if readers.is_empty() {
        return Err("give at least one replica for the clients after the writer".into());
    }
    let clients_wanted = env_number("CLIENTS", 100);
    let rounds = env_number("ROUNDS", 50);
    let mut clients = Vec::with_capacity(clients_wanted);
    for i in 0..clients_wanted {
        clients.push(Client::builder(&readers[i % readers.len()]).token(token).build().await?);
    }
    let http = reqwest::Client::new();
    let command = |name: &str| {
        http.post(format!("{writer}/flags/{FLAG}/{name}")).bearer_auth(token).header("content-type", "application/json")
    };
    all_answer(&clients, true).await?;
    let mut took = Vec::with_capacity(rounds * clients.len());
    for _ in 0..rounds {
        let waiters = watch_for(&clients, false);
        let start = Instant::now();
        let status = command("rollback").body(r#"{"reason":"propagation benchmark"}"#).send().await?.status();
        if !status.is_success() {
            return Err(format!("rollback answered {status}").into());
        }
        took.extend(arrivals(waiters).await?.into_iter().map(|at| at - start));
        let status = command("resume").body("{}").send().await?.status();
        if !status.is_success() {
            return Err(format!("resume answered {status}").into());
        }
        all_answer(&clients, true).await?;
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    println!(
        "rollback through {writer} reaching {} SDK clients on {} replicas, {rounds} rounds ({} arrivals): \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        clients.len(),
        readers.len(),
        took.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0)),
    );
    for client in clients {
        client.close().await;
    }
    Ok(())
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One task per client, started before the change: each returns when its client answers `on`.
fn watch_for(clients: &[Client], on: bool) -> JoinSet<Instant> {
    let mut waiters = JoinSet::new();
    for client in clients {
        let client = client.clone();
        let mut changes = client.changes();
        changes.mark_unchanged();
        waiters.spawn(async move {
            while client.is_enabled(FLAG, USER) != on {
                if changes.changed().await.is_err() {
                    break;
                }
            }
            Instant::now()
        });
    }
    waiters
}

/// When each client answered, within 10 s.
async fn arrivals(mut waiters: JoinSet<Instant>) -> Result<Vec<Instant>, Box<dyn std::error::Error>> {
    let mut at = Vec::with_capacity(waiters.len());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Some(joined) = tokio::time::timeout_at(deadline, waiters.join_next()).await? {
        at.push(joined?);
    }
    Ok(at)
}

async fn all_answer(clients: &[Client], on: bool) -> Result<(), Box<dyn std::error::Error>> {
    arrivals(watch_for(clients, on)).await.map(|_| ())
}
