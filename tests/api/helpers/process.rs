//! The real `rollout serve` binary as a child process, for the fault tests: spawned with its
//! arguments and environment, its logs captured to a file, stopped by signals like in production.

use std::fs::File;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{ADMIN, Client, free_port};

/// Settings that make the controller react within a second: 100 ms ticks, a 1 s lease, 1 s resync.
pub const FAST: &[(&str, &str)] =
    &[("ROLLOUT_CONTROLLER_TICK_MS", "100"), ("ROLLOUT_LEASE_MS", "1000"), ("ROLLOUT_RESYNC_SECS", "1")];

/// Taken by every test that times real processes, so that they do not run at the same time as
/// each other (their figures are throughput and latencies on a small machine).
static TIMED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until no other timed test runs; hold the guard for the whole test.
pub async fn timed_test() -> tokio::sync::MutexGuard<'static, ()> {
    TIMED.lock().await
}

/// A running `rollout serve`, killed on drop; its request helpers through [`Client`].
pub struct ServiceProcess {
    client: Client,
    child: Option<Child>,
    log: PathBuf,
    /// What it was started with, for [`ServiceProcess::restart`].
    command: Launch,
    _dir: tempfile::TempDir,
}

#[derive(Clone)]
struct Launch {
    redis_url: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl ServiceProcess {
    /// `rollout serve --listen 127.0.0.1:<free port> [args]` on `redis_url` with the admin token
    /// [`ADMIN`] and `env` (none of the test's own `ROLLOUT_*` variables); waits until it is ready.
    pub async fn spawn(redis_url: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let service = Self::launch(redis_url, args, env);
        service.wait_ready(Duration::from_secs(15)).await;
        service
    }

    /// Like [`ServiceProcess::spawn`], without waiting for readiness.
    pub fn launch(redis_url: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("service.log");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let command = Launch {
            redis_url: redis_url.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        };
        let child = start(addr, &command, &log);
        // No idle keep-alive connections left behind: tests count the service's connections.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        Self { client: Client { addr, http }, child: Some(child), log, command, _dir: dir }
    }

    /// Kills it (SIGKILL, like a crash) and starts it again on the same address with the same
    /// arguments; waits until it is ready. Its log goes on in the same file.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = Some(start(self.client.addr, &self.command, &self.log));
        self.wait_ready(Duration::from_secs(15)).await;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the service did not become ready within {within:?}; its log:\n{}", self.logs());
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`) through kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args(["-s", name, &self.pid().to_string()]).status().expect("kill(1) runs");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits for the process to exit by itself; its exit status, or `None` if still running then.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.as_mut().expect("started").try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Kills it at once (SIGKILL), like a crash, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything it wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// This replica's name in the lease, and who holds the lease (`GET /admin/status`).
    pub async fn lease(&self) -> (String, Option<String>) {
        let s = self.admin_get("/admin/status").await.body;
        (s["this_replica"].as_str().unwrap_or_default().to_owned(), s["leader"].as_str().map(str::to_owned))
    }

    pub async fn is_leader(&self) -> bool {
        let (me, leader) = self.lease().await;
        leader.as_deref() == Some(me.as_str())
    }
}

/// `rollout serve --listen addr` as `command` says, appending its output to `log`.
fn start(addr: SocketAddr, command: &Launch, log: &PathBuf) -> Child {
    let out = File::options().create(true).append(true).open(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollout"));
    child.args(["serve", "--listen", &addr.to_string()]).args(&command.args).stdin(Stdio::null());
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("ROLLOUT_") || k == "RUST_LOG") {
        child.env_remove(key);
    }
    child
        .env("NO_COLOR", "1")
        .env("ROLLOUT_REDIS_URL", &command.redis_url)
        .env("ROLLOUT_ADMIN_TOKENS", format!("ann:{ADMIN}"))
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    child.spawn().expect("the rollout binary starts")
}

impl Deref for ServiceProcess {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
