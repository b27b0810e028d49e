//! The test harness, one concern per file:
//! - [`redis`]: a real `redis-server` (or a three-node Redis Cluster) per test on free ports;
//! - [`app`]: the app in-process on port 0, started by one builder (`TestApp::on(&redis).spawn()`);
//! - [`process`]: the real `rollout serve` binary as a child process;
//! - [`client`]: the request helpers both of them answer (`get`, `admin_put`, `evaluate`, …);
//! - [`cli`]: runs of the `rollout` CLI;
//!
//! and, here, what every test shares: the admin token, the manual clock's start, free ports and
//! [`eventually`]. Tests import everything from `crate::helpers`.

mod app;
mod cli;
mod client;
mod process;
mod redis;

use std::net::TcpListener;
use std::time::{Duration, Instant};

pub use app::{Spawn, TestApp};
pub use cli::{CliRun, rollout_cli};
pub use client::{Client, Reply};
pub use process::{FAST, ServiceProcess, timed_test};
pub use redis::{RedisCluster, RedisOptions, RedisServer, TlsFiles};

pub const ADMIN: &str = "admin-token-for-tests";
/// 2023-11-14T22:13:20Z
pub const T0: i64 = 1_700_000_000_000;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Polls `check` every 2 ms until it holds; panics naming `what` if it still does not after `limit`.
/// Returns how long it took.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
