//! The app in-process on port 0, started by one builder:
//! `TestApp::on(&redis).spawn().await`, or with `.settings(|s| …)`, `.clock(…)`, `.system_clock()`.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use rollout_controller::clock::{Clock, ManualClock, SystemClock};
use rollout_controller::config::{NamedToken, Settings};
use rollout_controller::server::{self, Running};
use rollout_controller::store::Store;
use secrecy::ExposeSecret;

use super::{ADMIN, CliRun, Client, RedisCluster, RedisServer, T0, eventually, rollout_cli};

/// A started app: its request helpers (through [`Client`]), its manual clock and its controller.
pub struct TestApp {
    client: Client,
    /// The app's clock; unused by an app spawned with [`Spawn::system_clock`].
    pub clock: ManualClock,
    running: Option<Running>,
}

impl TestApp {
    /// An app on this Redis.
    pub fn on(redis: &RedisServer) -> Spawn {
        Spawn::new(Some(redis.url()))
    }

    /// An app on this Redis Cluster.
    pub fn on_cluster(cluster: &RedisCluster) -> Spawn {
        let mut spawn = Spawn::new(None);
        spawn.settings.redis_cluster_urls = cluster.urls().into_iter().map(Into::into).collect();
        spawn
    }

    /// An app on the memory store.
    pub fn in_memory() -> Spawn {
        Spawn::new(None)
    }

    /// An app on a store the test prepared (e.g. seeded behind the API's back).
    pub fn on_store(store: Arc<dyn Store>) -> Spawn {
        Spawn { store: Some(store), ..Spawn::new(None) }
    }

    /// A test handle on a started app, once it is ready.
    async fn attach(running: Running, clock: ManualClock) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
        let app = Self { client: Client { addr: running.addr, http }, clock, running: Some(running) };
        app.wait_ready().await;
        app
    }

    async fn wait_ready(&self) {
        eventually(Duration::from_secs(10), "the app to become ready", || async {
            self.get("/readyz").await.status == 200
        })
        .await;
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

impl Deref for TestApp {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// How a [`TestApp`] starts: its store (the constructors on `TestApp`), its settings, its clock.
/// By default the settings are the tests' (admin token [`ADMIN`], the controller stepped by the
/// test) and the clock is a manual one at [`T0`].
#[must_use = "an app starts only on `.spawn().await`"]
pub struct Spawn {
    settings: Settings,
    clock: AppClock,
    store: Option<Arc<dyn Store>>,
}

enum AppClock {
    Manual(ManualClock),
    /// The system clock, for tests whose app compares its time with Redis `TIME`.
    System,
}

impl Spawn {
    fn new(redis_url: Option<String>) -> Self {
        Self { settings: test_settings(redis_url), clock: AppClock::Manual(ManualClock::new(T0)), store: None }
    }

    /// Changes the settings the app starts with.
    pub fn settings(mut self, edit: impl FnOnce(&mut Settings)) -> Self {
        edit(&mut self.settings);
        self
    }

    /// Runs the app on this manual clock instead of a fresh one at [`T0`].
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = AppClock::Manual(clock);
        self
    }

    /// Runs the app on the system clock (for tests about real time only).
    pub fn system_clock(mut self) -> Self {
        self.clock = AppClock::System;
        self
    }

    /// Starts the app; returns once it is ready.
    pub async fn spawn(self) -> TestApp {
        let (shared, clock): (Arc<dyn Clock>, ManualClock) = match self.clock {
            AppClock::Manual(clock) => (Arc::new(clock.clone()), clock),
            // The handle's manual clock is unused then: the app runs on the system clock.
            AppClock::System => (Arc::new(SystemClock), ManualClock::new(T0)),
        };
        let running = match self.store {
            Some(store) => server::start_with_store(self.settings, shared, store).await,
            None => server::start(self.settings, shared).await,
        };
        TestApp::attach(running.expect("app starts"), clock).await
    }
}

fn test_settings(redis_url: Option<String>) -> Settings {
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
        // Tests count the flags they create; the first start's default flag has its own test.
        create_default_flag: false,
        ..Settings::default()
    }
}
