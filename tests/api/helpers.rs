//! Test harness: a real `redis-server` per test on a free port, the app in-process on port 0.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollout_controller::clock::{Clock, ManualClock, SystemClock};
use rollout_controller::config::{NamedToken, Settings};
use rollout_controller::server::{self, Running};
use rollout_controller::store::Store;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

pub const ADMIN: &str = "admin-token-for-tests";
/// 2023-11-14T22:13:20Z
pub const T0: i64 = 1_700_000_000_000;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// How a test's `redis-server` runs.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `requirepass`: clients must send it (it goes into [`RedisServer::url`]).
    pub password: Option<String>,
    /// Append-only file with fsync on every write: a restart keeps the data.
    pub persistent: bool,
    /// Serve TLS only (`rediss://`), with this certificate.
    pub tls: Option<TlsFiles>,
}

/// PEM files of a TLS server and the CA that signed it.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
}

/// A `redis-server` of our own, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    options: RedisOptions,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(RedisOptions::default())
    }

    pub fn start_with(options: RedisOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Self { port: free_port(), child: None, dir, options };
        server.launch();
        server
    }

    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() { "rediss" } else { "redis" };
        match &self.options.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{}/", self.port),
            None => format!("{scheme}://127.0.0.1:{}/", self.port),
        }
    }

    fn client(&self) -> redis::Client {
        match &self.options.tls {
            Some(tls) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates { client_tls: None, root_cert: Some(std::fs::read(&tls.ca).expect("CA file")) },
            ),
            None => redis::Client::open(self.url()),
        }
        .expect("url")
    }

    fn launch(&mut self) {
        let mut command = Command::new("redis-server");
        let port = self.port.to_string();
        match &self.options.tls {
            Some(tls) => {
                command.args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"]);
                command.arg("--tls-cert-file").arg(&tls.cert).arg("--tls-key-file").arg(&tls.key);
                command.arg("--tls-ca-cert-file").arg(&tls.ca);
            }
            None => {
                command.args(["--port", &port]);
            }
        }
        command.args(["--bind", "127.0.0.1", "--save", ""]);
        if self.options.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        if let Some(password) = &self.options.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = self.client();
        while Instant::now() < deadline {
            if let Ok(mut c) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Kills the server (its data is gone: it keeps nothing on disk).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port: empty, unless it is persistent.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Starts it again after [`RedisServer::stop`].
    pub fn start_again(&mut self) {
        self.launch();
    }

    /// A plain connection for inspecting keys.
    pub fn connection(&self) -> redis::Connection {
        self.client().get_connection().expect("connect to test redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A local Redis Cluster: three masters (no replicas) on free ports, each with its own directory
/// in one temp dir; every node is killed on drop.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    bus_ports: Vec<u16>,
    /// `requirepass` (and `masterauth`) of every node.
    password: Option<String>,
    /// Serve TLS only, clients and cluster bus alike (`rediss://` seeds).
    tls: Option<TlsFiles>,
    children: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_with_password(None)
    }

    pub fn start_with_password(password: Option<String>) -> Self {
        Self::start_with(password, None)
    }

    /// Every node serves TLS only (`--port 0`), with `tls`'s certificate, on the cluster bus too.
    pub fn start_tls(tls: TlsFiles) -> Self {
        Self::start_with(None, Some(tls))
    }

    fn start_with(password: Option<String>, tls: Option<TlsFiles>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster =
            Self { ports: Vec::new(), bus_ports: Vec::new(), password, tls, children: Vec::new(), _dir: dir };
        for i in 0..3 {
            let (port, bus_port) = (free_port(), free_port());
            std::fs::create_dir(cluster._dir.path().join(format!("node-{i}"))).expect("node dir");
            cluster.ports.push(port);
            cluster.bus_ports.push(bus_port);
            let child = cluster.spawn_node(i);
            cluster.children.push(Some(child));
        }
        for port in &cluster.ports {
            wait_for(Duration::from_secs(10), || cluster.ping(*port), "a cluster node to start");
        }
        let nodes: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut redis_cli = Command::new("redis-cli");
        if let Some(password) = &cluster.password {
            redis_cli.args(["-a", password, "--no-auth-warning"]);
        }
        if let Some(tls) = &cluster.tls {
            redis_cli.arg("--tls").arg("--cacert").arg(&tls.ca);
        }
        let created = redis_cli
            .args(["--cluster", "create"])
            .args(&nodes)
            .arg("--cluster-yes")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be on PATH (apt-get install redis-tools)");
        assert!(created.success(), "redis-cli --cluster create failed");
        cluster.wait_healthy();
        cluster
    }

    /// A node without persistence: its cluster config (`nodes.conf`, slots and node id) stays in
    /// its directory, its data does not.
    fn spawn_node(&self, node: usize) -> Child {
        let mut command = Command::new("redis-server");
        if let Some(password) = &self.password {
            command.args(["--requirepass", password, "--masterauth", password]);
        }
        let port = self.ports[node].to_string();
        match &self.tls {
            Some(tls) => {
                command.args(["--port", "0", "--tls-port", &port, "--tls-cluster", "yes", "--tls-auth-clients", "no"]);
                command.arg("--tls-cert-file").arg(&tls.cert).arg("--tls-key-file").arg(&tls.key);
                command.arg("--tls-ca-cert-file").arg(&tls.ca);
            }
            None => {
                command.args(["--port", &port]);
            }
        }
        command
            .args(["--cluster-port", &self.bus_ports[node].to_string()])
            .args(["--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self._dir.path().join(format!("node-{node}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH (apt-get install redis-server)")
    }

    fn wait_healthy(&self) {
        for port in &self.ports {
            wait_for(Duration::from_secs(20), || self.cluster_ok(*port), "cluster_state:ok on every node");
        }
    }

    /// Kills one node and starts it again on the same port: it rejoins with its slots, empty.
    pub fn restart_empty(&mut self, node: usize) {
        self.kill(node);
        let child = self.spawn_node(node);
        self.children[node] = Some(child);
        wait_for(Duration::from_secs(10), || self.ping(self.ports[node]), "the node to start again");
        self.wait_healthy();
    }

    pub fn urls(&self) -> Vec<String> {
        self.ports.iter().map(|p| self.url(*p)).collect()
    }

    fn url(&self, port: u16) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{port}/"),
            None => format!("{scheme}://127.0.0.1:{port}/"),
        }
    }

    /// The CA's PEM when the cluster serves TLS.
    pub fn ca_pem(&self) -> Option<Vec<u8>> {
        self.tls.as_ref().map(|tls| std::fs::read(&tls.ca).expect("CA file"))
    }

    fn client(&self, port: u16) -> redis::RedisResult<redis::Client> {
        match self.ca_pem() {
            Some(root_cert) => redis::Client::build_with_tls(
                self.url(port),
                redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) },
            ),
            None => redis::Client::open(self.url(port)),
        }
    }

    fn ping(&self, port: u16) -> bool {
        self.client(port)
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    fn cluster_ok(&self, port: u16) -> bool {
        self.client(port)
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
            .is_ok_and(|info| info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384"))
    }

    /// Kills one node (its slots become unreachable: there are no replicas).
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.children[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The store of the service on this cluster (key prefix `rollout`).
    pub fn store(&self) -> rollout_controller::store::RedisStore {
        let urls = self.urls();
        let seeds: Vec<&str> = urls.iter().map(String::as_str).collect();
        rollout_controller::store::RedisStore::connect_cluster(&seeds, "rollout", self.ca_pem()).expect("cluster URLs")
    }

    /// A plain connection to one node.
    pub fn connection(&self, node: usize) -> redis::Connection {
        self.client(self.ports[node]).and_then(|c| c.get_connection()).expect("connect to node")
    }

    /// Publishes `change` on the change channel through `node`; whether it comes through `changes`
    /// within 5 s (earlier messages still crossing the cluster bus are skipped).
    pub async fn published_change_arrives(
        &self,
        node: usize,
        changes: &mut futures::stream::BoxStream<'static, rollout_controller::store::Change>,
        change: &rollout_controller::store::Change,
    ) -> bool {
        use futures::StreamExt;
        let payload = serde_json::to_string(change).expect("change JSON");
        let _: i64 = redis::cmd("PUBLISH")
            .arg("rollout:changes")
            .arg(payload)
            .query(&mut self.connection(node))
            .expect("publish");
        let arrives = async {
            while let Some(seen) = changes.next().await {
                if seen == *change {
                    return true;
                }
            }
            false
        };
        tokio::time::timeout(Duration::from_secs(5), arrives).await.unwrap_or(false)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in 0..self.children.len() {
            self.kill(node);
        }
    }
}

fn wait_for(within: Duration, mut check: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub clock: ManualClock,
    running: Option<Running>,
}

pub fn settings(redis_url: Option<String>) -> Settings {
    Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        redis_url: redis_url.map(Into::into),
        admin_tokens: vec![NamedToken { name: "ann".into(), secret: ADMIN.to_owned().into() }],
        resync_every: Duration::from_secs(1),
        // The tests step the controller themselves (`TestApp::tick`); the loop only takes the lease at start.
        controller_tick: Duration::from_secs(3600),
        lease: Duration::from_secs(7200),
        // Every push is judged inline (the gap is covered by its own test).
        push_judge_gap: Duration::ZERO,
        // In-process apps stop at once; the drain is tested on the real binary (shutdown.rs).
        drain: Duration::ZERO,
        ..Settings::default()
    }
}

/// The app on the given Redis (or the memory store), with a manual clock at [`T0`].
pub async fn spawn_app(redis_url: Option<String>) -> TestApp {
    spawn_with(settings(redis_url)).await
}

pub async fn spawn_with(settings: Settings) -> TestApp {
    let clock = ManualClock::new(T0);
    spawn_with_clock(settings, clock).await
}

pub async fn spawn_with_clock(settings: Settings, clock: ManualClock) -> TestApp {
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    attach(server::start(settings, shared).await.expect("app starts"), clock).await
}

/// A test handle on a started app, once it is ready.
async fn attach(running: Running, clock: ManualClock) -> TestApp {
    let app = TestApp {
        addr: running.addr,
        http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client"),
        clock,
        running: Some(running),
    };
    app.wait_ready().await;
    app
}

/// An app on the system clock (for tests about real time only).
#[allow(dead_code)]
pub async fn spawn_app_real_clock(redis_url: Option<String>) -> TestApp {
    spawn_with_system_clock(settings(redis_url)).await
}

/// An app with these settings on the system clock (its clock is compared with Redis `TIME`).
pub async fn spawn_with_system_clock(settings: Settings) -> TestApp {
    // The manual clock of the handle is unused here: the app runs on the system clock.
    attach(server::start(settings, Arc::new(SystemClock)).await.expect("app starts"), ManualClock::new(T0)).await
}

/// An app on a store the test prepared (e.g. seeded behind the API's back), with a manual clock at [`T0`].
pub async fn spawn_with_store(settings: Settings, store: Arc<dyn Store>) -> TestApp {
    let clock = ManualClock::new(T0);
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    attach(server::start_with_store(settings, shared, store).await.expect("app starts"), clock).await
}

/// How a run of the real `rollout` binary went.
#[derive(Debug)]
pub struct CliRun {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// Stdout as JSON (for `--json`).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("JSON on stdout ({e}): {self:?}"))
    }
}

/// Runs the `rollout` binary with `args` and `env`, none of the test's own `ROLLOUT_*` variables.
/// It runs on a blocking thread, so the app in this process keeps serving meanwhile.
pub async fn rollout_cli(args: &[&str], env: &[(&str, &str)]) -> CliRun {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rollout"));
    command.args(args).stdin(Stdio::null());
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("ROLLOUT_")) {
        command.env_remove(key);
    }
    command.env("NO_COLOR", "1").envs(env.iter().copied());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the CLI thread")
        .expect("the rollout binary runs");
    CliRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A JSON response: status and parsed body (Null when empty).
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The server's base URL, as the CLI's `--server` takes it.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs the `rollout` binary against this app with the admin token (through `ROLLOUT_TOKEN`).
    pub async fn cli(&self, args: &[&str]) -> CliRun {
        self.cli_with_token(ADMIN, args).await
    }

    /// Runs the `rollout` binary against this app with the given token.
    pub async fn cli_with_token(&self, token: &str, args: &[&str]) -> CliRun {
        let base = self.base();
        rollout_cli(args, &[("ROLLOUT_SERVER", base.as_str()), ("ROLLOUT_TOKEN", token)]).await
    }

    /// The admin token the app generated because none was configured.
    pub fn generated_token(&self) -> Option<String> {
        let running = self.running.as_ref().expect("running");
        running.generated_token.as_ref().map(|t| t.expose_secret().to_owned())
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.get("/readyz").await.status == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("app did not become ready");
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        self.exec(req.build().expect("request")).await
    }

    pub async fn exec(&self, req: reqwest::Request) -> Reply {
        let resp = self.http.execute(req).await.expect("request completes");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("JSON body, got {:?}", String::from_utf8_lossy(&bytes)))
        };
        Reply { status, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path)).bearer_auth(ADMIN)).await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.post(self.url(path)).bearer_auth(ADMIN).json(&body)).await
    }

    pub async fn admin_put(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.put(self.url(path)).bearer_auth(ADMIN).json(&body)).await
    }

    pub async fn admin_delete(&self, path: &str) -> Reply {
        self.send(self.http.delete(self.url(path)).bearer_auth(ADMIN)).await
    }

    /// Creates a flag with the given definition (must be new).
    pub async fn create_flag(&self, flag: &str, definition: Value) -> Value {
        let r = self.admin_put(&format!("/flags/{flag}"), definition).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body
    }

    pub async fn command(&self, flag: &str, command: &str) -> Reply {
        self.admin_post(&format!("/flags/{flag}/{command}"), json!({})).await
    }

    /// Runs a command that must succeed; returns the new flag state.
    pub async fn must(&self, flag: &str, command: &str) -> Value {
        let r = self.command(flag, command).await;
        assert_eq!(r.status, 200, "{command} {flag}: {}", r.body);
        r.body
    }

    pub async fn evaluate(&self, flag: &str, user: &str) -> Value {
        let r = self.get(&format!("/flags/{flag}/users/{user}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    pub async fn percent(&self, flag: &str) -> u64 {
        self.evaluate(flag, "probe").await["percent"].as_u64().expect("percent")
    }

    /// The answer for `user`, or `None` while this replica does not know the flag yet (404):
    /// for polling a replica a change has not reached.
    pub async fn try_evaluate(&self, flag: &str, user: &str) -> Option<Value> {
        let r = self.get(&format!("/flags/{flag}/users/{user}")).await;
        match r.status {
            200 => Some(r.body),
            404 => None,
            status => panic!("{status}: {}", r.body),
        }
    }

    /// The flag's percent, or `None` while this replica does not know the flag yet.
    pub async fn try_percent(&self, flag: &str) -> Option<u64> {
        Some(self.try_evaluate(flag, "probe").await?["percent"].as_u64().expect("percent"))
    }

    /// One controller step (lease, then judge every flag), as the loop would do at its next tick.
    pub async fn tick(&self) -> Vec<rollout_controller::controller::Outcome> {
        self.running.as_ref().expect("running").controller.tick().await
    }

    /// One pass of the controller without the lease check (as if this replica believed it led).
    pub async fn step(&self) -> Vec<rollout_controller::controller::Outcome> {
        self.running.as_ref().expect("running").controller.step().await
    }

    pub fn is_leader(&self) -> bool {
        self.running.as_ref().expect("running").controller.is_leader()
    }

    /// Pushes guard metrics with the admin token.
    pub async fn push(&self, flag: &str, sample: Value) -> Reply {
        self.admin_post(&format!("/flags/{flag}/metrics"), sample).await
    }

    /// Stops every task at once, as a crash would: the lease is not released.
    pub fn kill(mut self) {
        if let Some(r) = self.running.take() {
            r.kill();
        }
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Polls until `check` holds, up to `within`; returns how long it took.
pub async fn eventually<F, Fut>(within: Duration, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within_named(within, "condition", check).await
}

/// Like [`eventually`], naming what was awaited when it fails.
pub async fn within_named<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
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
