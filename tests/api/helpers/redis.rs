//! A real `redis-server` of the test's own on a free port, or a three-node Redis Cluster.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

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
        let mut server = Self { port: 0, child: None, dir, options };
        for _ in 0..5 {
            server.port = free_port();
            if server.try_launch() {
                return server;
            }
        }
        panic!("redis-server did not start on a free port in 5 attempts");
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

    /// Starts it again on its port.
    fn launch(&mut self) {
        assert!(self.try_launch(), "redis-server did not start again on port {}", self.port);
    }

    /// Starts redis-server on `self.port`; `false` (the process stopped) when it does not come up
    /// as itself within 10 s, e.g. because another test's server took the port first.
    fn try_launch(&mut self) -> bool {
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
        let mut child = command
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH (apt-get install redis-server)");
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            if serves_as(&client, child.id()) {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
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
            std::fs::create_dir(cluster._dir.path().join(format!("node-{i}"))).expect("node dir");
            cluster.ports.push(0);
            cluster.bus_ports.push(0);
            cluster.children.push(None);
            cluster.start_node_on_free_ports(i);
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

    /// Starts node `node` on free ports, and again on others when it does not come up as itself:
    /// another test's server may take a port between `free_port` and this node's bind.
    fn start_node_on_free_ports(&mut self, node: usize) {
        for _ in 0..5 {
            self.ports[node] = free_port();
            self.bus_ports[node] = free_port();
            let mut child = self.spawn_node(node);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                if self.is_served_by(self.ports[node], child.id()) {
                    self.children[node] = Some(child);
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("cluster node {node} did not start on free ports in 5 attempts");
    }

    /// Whether the server answering on `port` is the process `pid` (not another test's).
    fn is_served_by(&self, port: u16, pid: u32) -> bool {
        self.client(port).is_ok_and(|client| serves_as(&client, pid))
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

/// Whether the server `client` reaches is the process `pid` (its `INFO server` says so).
fn serves_as(client: &redis::Client, pid: u32) -> bool {
    let pid = format!("process_id:{pid}");
    client
        .get_connection()
        .and_then(|mut c| redis::cmd("INFO").arg("server").query::<String>(&mut c))
        .is_ok_and(|info| info.lines().any(|l| l.trim() == pid))
}

/// Blocks until `check` holds, polling every 20 ms (setup here is synchronous, unlike
/// [`super::eventually`]); panics naming `what` after `within`.
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
