//! Wires the store, the snapshot and its feed, the application layer, the controller, the
//! notifier and the HTTP server; supervises them and runs until shut down.
//!
//! The HTTP server is our own accept loop ([`accept`]) over hyper, on sockets with a write timeout
//! that answer hyper's own parse errors in our JSON shape ([`io`]).
//!
//! Supervision: every task but the start-up flags' seeding runs until shutdown; one that ends or
//! panics before is a failure, logged with its name, and `rollout serve` exits non-zero. No task
//! runs outside this set: the push judge's deferred judgements run in a task of it.
//!
//! Shutdown, in order: the drain (`/readyz` answers 503, everything else is still served with
//! `connection: close`; the controller stops at once and gives its lease up), then the listener
//! closes, change streams end and open connections finish their requests while the push judge
//! finishes the judgements under way and drops those not due, then the change feed stops and the
//! notifier delivers what is queued. Everything after the drain is bounded by the grace period.

mod accept;
mod io;
mod streams;
mod timer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinSet};

use crate::app::status::OpsInfo;
use crate::app::{self, App};
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigFlag, NamedToken, Settings};
use crate::controller::{self, Controller};
use crate::http::auth::{Auth, Scope};
use crate::http::ops::Drain;
use crate::http::{self, AppState};
use crate::notify::{self, Notice, NotifySettings, Target};
use crate::rollouts::{Declared, Request, RolloutError, Rollouts};
use crate::snapshot::{self, Snapshot};
use crate::sources::prometheus::Puller;
use crate::sources::{SignalStats, SourcesSettings};
use crate::store::{MemoryStore, RedisStore, Store};
use crate::telemetry::Telemetry;
use crate::timeline::Timeline;
use crate::util::error_chain;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot use the Redis URL")]
    Redis(#[source] redis::RedisError),
    #[error("cannot read the Redis CA certificate {path}")]
    RedisCa {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    NotifyClient(#[from] notify::BuildError),
    #[error("cannot build the HTTP client of the Prometheus queries")]
    PrometheusClient(#[source] reqwest::Error),
    #[error("cannot make up an admin token: the OS random source failed")]
    Random(#[source] getrandom::Error),
    #[error("the {task} task stopped while the service was running")]
    TaskExited { task: &'static str },
    #[error("the {task} task panicked: {message}")]
    TaskPanicked { task: &'static str, message: String },
}

/// A started service: its address, its controller, and the handle that stops it.
pub struct Running {
    pub addr: SocketAddr,
    pub controller: Arc<Controller>,
    /// The admin token made up at start when none was configured (printed once on stderr).
    pub generated_token: Option<SecretString>,
    tasks: Tasks,
    /// Set when the shutdown starts: `/readyz` answers 503 from then on.
    draining: Arc<Drain>,
    drain: Duration,
    grace: Duration,
}

fn token_list(tokens: &[NamedToken], scope: Scope) -> impl Iterator<Item = (Scope, String, String)> + '_ {
    tokens.iter().map(move |t| (scope, t.name.clone(), t.secret.expose_secret().to_owned()))
}

/// 24 random bytes in hex; an error when the OS random source fails (never a predictable token).
fn generated_token() -> Result<String, ServerError> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(ServerError::Random)?;
    Ok(hex::encode(bytes))
}

/// The admin tokens: the configured ones, or one made up at start.
struct Tokens {
    admin: Vec<NamedToken>,
    generated: Option<SecretString>,
}

impl Tokens {
    fn new(settings: &Settings) -> Result<Self, ServerError> {
        if !settings.admin_tokens.is_empty() {
            return Ok(Self { admin: settings.admin_tokens.clone(), generated: None });
        }
        let token = generated_token()?;
        // Printed once, to the terminal only: never through the logs.
        eprintln!("no admin token configured; this process accepts the generated token: {token}");
        let admin = vec![NamedToken { name: "admin".into(), secret: token.clone().into() }];
        Ok(Self { admin, generated: Some(SecretString::from(token)) })
    }

    /// Every token of the service, under its scope.
    fn auth(&self, settings: &Settings) -> Auth {
        Auth::new(
            token_list(&self.admin, Scope::Admin)
                .chain(token_list(&settings.read_tokens, Scope::Read))
                .chain(token_list(&settings.metrics_tokens, Scope::Metrics))
                .chain(token_list(&settings.alert_tokens, Scope::Alerts)),
        )
    }

    /// How this replica is set up, for `GET /admin/status`.
    fn ops_info(&self, settings: &Settings, replica: String) -> Result<OpsInfo, ServerError> {
        Ok(OpsInfo {
            replica,
            token_generated: self.generated.is_some(),
            admin_tokens: self.admin.len(),
            read_tokens: settings.read_tokens.len(),
            metrics_tokens: settings.metrics_tokens.len(),
            alert_tokens: settings.alert_tokens.len(),
            cio_signing_keys: settings.cio_signing_keys.clone(),
            notify_urls: settings
                .notify_urls
                .iter()
                .cloned()
                .chain(settings.notify_targets.iter().map(|t| SecretString::from(t.url.clone())))
                .collect(),
            probe: notify::probe_client()?,
        })
    }
}

fn sources_settings(settings: &Settings) -> SourcesSettings {
    SourcesSettings {
        alert_flag_label: settings.alert_flag_label.clone(),
        cio_signing_keys: settings.cio_signing_keys.iter().map(|k| k.expose_secret().as_bytes().to_vec()).collect(),
        cio_mapping: settings.cio_mapping.clone(),
    }
}

pub fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, ServerError> {
    let ca = || match &settings.redis_ca_file {
        Some(path) => {
            std::fs::read(path).map(Some).map_err(|source| ServerError::RedisCa { path: path.clone(), source })
        }
        None => Ok(None),
    };
    if !settings.redis_cluster_urls.is_empty() {
        let seeds: Vec<&str> = settings.redis_cluster_urls.iter().map(|u| u.expose_secret()).collect();
        let store = RedisStore::connect_cluster(&seeds, &settings.key_prefix, ca()?).map_err(ServerError::Redis)?;
        return Ok(Arc::new(store));
    }
    match &settings.redis_url {
        Some(url) => {
            let store = RedisStore::connect_with_ca(url.expose_secret(), &settings.key_prefix, ca()?)
                .map_err(ServerError::Redis)?;
            Ok(Arc::new(store))
        }
        None => {
            tracing::warn!(
                "no Redis URL given: using the embedded in-memory store; \
                state is not shared between replicas and is lost on exit"
            );
            Ok(Arc::new(MemoryStore::new()))
        }
    }
}

/// Starts everything on `settings.listen` (port 0 picks a free port) and returns at once.
pub async fn start(settings: Settings, clock: Arc<dyn Clock>) -> Result<Running, ServerError> {
    let store = open_store(&settings)?;
    start_with_store(settings, clock, store).await
}

pub async fn start_with_store(
    settings: Settings,
    clock: Arc<dyn Clock>,
    store: Arc<dyn Store>,
) -> Result<Running, ServerError> {
    let mut tasks = Tasks::new();
    let snapshot = Arc::new(Snapshot::with_follower_buffer(settings.stream_buffer));
    let telemetry = Arc::new(Telemetry::new());
    let signal_stats = Arc::new(SignalStats::default());
    let notices = spawn_background(&mut tasks, &settings, &store, &snapshot, &telemetry)?;
    let replica = controller::replica_id();
    let rollouts = Rollouts::new(Arc::clone(&store), Arc::clone(&snapshot), clock.clone(), Arc::clone(&telemetry))
        .with_notices(notices)
        .with_replica(&replica);
    let tokens = Tokens::new(&settings)?;
    let timeline = Timeline::new(rollouts.clone(), store.clone(), notify::check_client()?);
    let (app, deferred) = App::new(app::Parts {
        rollouts: rollouts.clone(),
        timeline: timeline.clone(),
        store: Arc::clone(&store),
        snapshot,
        clock,
        telemetry,
        signal_stats: Arc::clone(&signal_stats),
        sources: sources_settings(&settings),
        ops: tokens.ops_info(&settings, replica.clone())?,
        default_flag: settings.default_flag.clone(),
        push_judge_gap: settings.push_judge_gap,
        max_snapshot_age: settings.resync_every * 3,
        // Streams end when the server closes, so that its connections can finish.
        streams: app::clients::StreamSettings {
            heartbeat: settings.stream_heartbeat,
            max_clients: settings.max_stream_clients,
            stop: tasks.stop_signal(Stage::Close),
        },
    });
    tasks.spawn(Task::UNTIL_STOPPED.named("push judge", Stage::Close), deferred.run(tasks.stop_signal(Stage::Close)));
    let controller = spawn_controller(&mut tasks, &settings, rollouts, replica, signal_stats, timeline)?;

    let state = AppState::new(app, tokens.auth(&settings));
    let draining = Arc::clone(state.drain());
    let addr = serve(&mut tasks, &settings, state).await?;
    tracing::info!(%addr, store = store.kind(), "listening");
    Ok(Running {
        addr,
        controller,
        generated_token: tokens.generated,
        tasks,
        draining,
        drain: settings.drain,
        grace: settings.shutdown_grace,
    })
}

/// Starts the notifier and the change feed, the last tasks to stop; returns the notifier's queue.
fn spawn_background(
    tasks: &mut Tasks,
    settings: &Settings,
    store: &Arc<dyn Store>,
    snapshot: &Arc<Snapshot>,
    telemetry: &Arc<Telemetry>,
) -> Result<mpsc::Sender<Notice>, ServerError> {
    let notify_settings = NotifySettings {
        targets: settings
            .notify_urls
            .iter()
            .map(|u| Target::generic(u.expose_secret()))
            .chain(settings.notify_targets.iter().cloned())
            .collect(),
        dashboard_url: settings.dashboard_url.clone(),
        ..NotifySettings::default()
    };
    let (notices, notifier) =
        notify::spawn(notify_settings, Arc::clone(telemetry), tasks.stop_signal(Stage::Background))?;
    tasks.spawn(Task::UNTIL_STOPPED.named("notifier", Stage::Background), notifier);
    let stop = tasks.stop_signal(Stage::Background);
    let feed = snapshot::run_feed(Arc::clone(store), Arc::clone(snapshot), settings.resync_every, stop);
    tasks.spawn(Task::UNTIL_STOPPED.named("change feed", Stage::Background), feed);
    Ok(notices)
}

/// Starts the controller's loop and the start-up flags' seeding (the config file's, the first
/// start's default flag).
fn spawn_controller(
    tasks: &mut Tasks,
    settings: &Settings,
    rollouts: Rollouts,
    replica: String,
    signal_stats: Arc<SignalStats>,
    timeline: Timeline,
) -> Result<Arc<Controller>, ServerError> {
    let puller = Puller::new().map_err(ServerError::PrometheusClient)?;
    let controller =
        Arc::new(Controller::new(rollouts.clone(), replica, settings.lease, signal_stats, puller, timeline));
    tasks.spawn(
        Task::UNTIL_STOPPED.named("controller", Stage::Drain),
        Arc::clone(&controller).run(settings.controller_tick, tasks.stop_signal(Stage::Drain)),
    );
    let default_flag = Some(settings.default_flag.clone()).filter(|_| settings.create_default_flag);
    if !settings.flags.is_empty() || default_flag.is_some() {
        tasks.spawn(
            Task::ONE_SHOT.named("start-up flags", Stage::Drain),
            seed_flags(rollouts, settings.flags.clone(), default_flag, tasks.stop_signal(Stage::Drain)),
        );
    }
    Ok(controller)
}

/// Binds the listener and serves the HTTP edge on it until the close stage; returns its address.
async fn serve(tasks: &mut Tasks, settings: &Settings, state: AppState) -> Result<SocketAddr, ServerError> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: settings.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: settings.listen, source })?;
    let drain = Arc::clone(state.drain());
    let limits = accept::Limits {
        header_read_timeout: settings.header_read_timeout,
        write_timeout: settings.write_timeout,
        max_connections: settings.max_connections,
        request_timeout: settings.request_timeout,
    };
    let router = http::router(state, &settings.cors_origins, &settings.base_path);
    tasks.spawn(
        Task::UNTIL_STOPPED.named("http server", Stage::Close),
        accept::serve(listener, router, drain, limits, settings.base_path.clone(), tasks.stop_signal(Stage::Close)),
    );
    Ok(addr)
}

/// The start-up flags: the config file's (created when absent, or reconciled), then the first
/// start's default flag ([`Rollouts::first_start`]); retried every second while the store is out
/// of reach. A definition the store refuses for good (a reconciled plan without the stage its
/// live flag is in) is logged and left.
async fn seed_flags(
    rollouts: Rollouts,
    flags: std::collections::BTreeMap<String, ConfigFlag>,
    default_flag: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let req = Request::new("config", "declared in the config file");
    let mut pending: Vec<_> = flags.into_iter().collect();
    let mut first_start = default_flag;
    loop {
        let mut retry = Vec::new();
        for (name, flag) in pending {
            match rollouts.declare(&name, flag.definition.clone(), flag.reconcile, &req).await {
                Ok(Declared::Created) => tracing::info!(flag = %name, "created from the config file"),
                Ok(Declared::Updated) => tracing::info!(flag = %name, "reconciled with the config file"),
                Ok(Declared::Unchanged) => {}
                Err(RolloutError::Store(e)) => {
                    tracing::warn!(flag = %name, error = %error_chain(&e), "cannot apply the flag from the config file yet");
                    retry.push((name, flag));
                }
                Err(e) => {
                    tracing::error!(flag = %name, error = %error_chain(&e), "the config file's flag is not applied")
                }
            }
        }
        pending = retry;
        if pending.is_empty()
            && let Some(name) = first_start.take()
        {
            match rollouts.first_start(&name).await {
                Ok(true) => tracing::info!(flag = %name, "first start on an empty store: created the default flag"),
                Ok(false) => tracing::info!(flag = %name, "not the store's first start: no default flag created"),
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "cannot check for the first start yet");
                    first_start = Some(name);
                }
            }
        }
        if pending.is_empty() && first_start.is_none() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => break,
        }
    }
}

/// When a task is told to stop, in shutdown order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// At the start of the drain: the controller (it hands its lease over at once) and the seeding.
    Drain,
    /// At the end of the drain: the HTTP server closes its listener and finishes open requests;
    /// the push judge finishes its judgements under way.
    Close,
    /// Once no request is left: the change feed, and the notifier after delivering its queue.
    Background,
}

const STAGES: [Stage; 3] = [Stage::Drain, Stage::Close, Stage::Background];

/// A supervised task: its name in the logs, whether it may end by itself, and when it is stopped.
#[derive(Debug, Clone, Copy)]
struct Task {
    name: &'static str,
    one_shot: bool,
    stage: Stage,
}

impl Task {
    /// Runs until told to stop: ending before is a failure.
    const UNTIL_STOPPED: Task = Task { name: "", one_shot: false, stage: Stage::Background };
    /// Does its job and ends (the start-up flags' seeding).
    const ONE_SHOT: Task = Task { name: "", one_shot: true, stage: Stage::Background };

    const fn named(self, name: &'static str, stage: Stage) -> Task {
        Task { name, stage, ..self }
    }
}

/// The service's tasks, their stop signals (one per [`Stage`]) and what each one is.
struct Tasks {
    set: JoinSet<()>,
    running: HashMap<tokio::task::Id, Task>,
    stops: [watch::Sender<bool>; 3],
}

impl Tasks {
    fn new() -> Self {
        Self { set: JoinSet::new(), running: HashMap::new(), stops: STAGES.map(|_| watch::channel(false).0) }
    }

    fn stop_signal(&self, stage: Stage) -> watch::Receiver<bool> {
        self.stops[stage as usize].subscribe()
    }

    fn spawn(&mut self, task: Task, work: impl Future<Output = ()> + Send + 'static) {
        let id = self.set.spawn(work).id();
        self.running.insert(id, task);
    }

    /// The next task to end: which one, and the failure if it panicked.
    async fn next_end(&mut self) -> Option<(Task, Option<ServerError>)> {
        let (id, panic) = match self.set.join_next_with_id().await? {
            Ok((id, ())) => (id, None),
            Err(e) => (e.id(), Some(e)),
        };
        let task = self.running.remove(&id).unwrap_or(Task::UNTIL_STOPPED.named("unknown", Stage::Background));
        Some((task, panic.map(|e| panicked(task.name, e))))
    }

    /// Waits until a task fails: a panic, or a task other than a one-shot one ending at all.
    async fn failure(&mut self) -> ServerError {
        loop {
            match self.next_end().await {
                Some((_, Some(panic))) => return panic,
                Some((task, None)) if !task.one_shot => return ServerError::TaskExited { task: task.name },
                Some((task, None)) => tracing::debug!(task = task.name, "task done"),
                // Nothing left to supervise: nothing can fail any more.
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Tells the tasks of `stage` to stop and waits until they have.
    async fn stop(&mut self, stage: Stage) {
        self.stops[stage as usize].send_replace(true);
        while self.running.values().any(|task| task.stage == stage) {
            match self.next_end().await {
                Some((_, Some(panic))) => tracing::error!(error = %panic, "task failed while stopping"),
                Some(_) => {}
                None => return,
            }
        }
    }
}

fn panicked(task: &'static str, e: JoinError) -> ServerError {
    let message = match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into()),
        Err(e) => e.to_string(),
    };
    ServerError::TaskPanicked { task, message }
}

impl Running {
    /// Drains (`/readyz` 503 for the drain period, every other request still served), then stops
    /// taking connections, lets in-flight requests finish and the notifier deliver its queue
    /// within the grace period, and stops every task.
    pub async fn shutdown(mut self) {
        self.draining.start();
        let drain_ends = tokio::time::Instant::now() + self.drain;
        let (drain, grace) = (self.drain, self.grace);
        let stopped = tokio::time::timeout_at(drain_ends + grace, async {
            self.tasks.stop(Stage::Drain).await;
            if !drain.is_zero() {
                tracing::info!(?drain, "draining: /readyz answers 503, requests are still served");
                tokio::time::sleep_until(drain_ends).await;
            }
            self.tasks.stop(Stage::Close).await;
            self.tasks.stop(Stage::Background).await;
        })
        .await;
        if stopped.is_err() {
            tracing::warn!(?grace, "grace period over; abandoning requests and notifications still in flight");
            self.tasks.set.abort_all();
        }
    }

    /// Stops every task at once without any clean-up, like a crash (for fault tests).
    pub fn kill(mut self) {
        self.tasks.set.abort_all();
        self.tasks.set.detach_all();
    }

    /// Runs until the process is told to stop (then shuts down and returns `Ok`) or a task fails
    /// (then shuts down and returns the failure).
    pub async fn until_signal(mut self) -> Result<(), ServerError> {
        let outcome = tokio::select! {
            _ = shutdown_signal() => Ok(()),
            failure = self.tasks.failure() => {
                tracing::error!(error = %failure, "a task failed");
                Err(failure)
            }
        };
        tracing::info!("shutting down");
        self.shutdown().await;
        outcome
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// `rollout serve`.
pub async fn run(settings: Settings) -> Result<(), ServerError> {
    start(settings, Arc::new(SystemClock)).await?.until_signal().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tasks that park until their stage's stop signal.
    fn parked(tasks: &Tasks, stage: Stage) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = tasks.stop_signal(stage);
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    }

    #[tokio::test]
    async fn a_one_shot_task_may_end_but_a_long_running_one_that_ends_or_panics_is_a_failure() {
        let mut tasks = Tasks::new();
        tasks.spawn(Task::UNTIL_STOPPED.named("http server", Stage::Close), parked(&tasks, Stage::Close));
        tasks.spawn(Task::ONE_SHOT.named("config flags", Stage::Drain), async {});
        let mut stop = tasks.stop_signal(Stage::Background);
        tasks.spawn(Task::UNTIL_STOPPED.named("change feed", Stage::Background), async move {
            let _ = stop.changed().await;
            panic!("the feed broke");
        });
        // The seeding ends at once; that is no failure, and nothing else has failed yet.
        let quiet = tokio::time::timeout(Duration::from_millis(100), tasks.failure()).await;
        assert!(quiet.is_err(), "{quiet:?}");
        tasks.stops[Stage::Background as usize].send_replace(true);
        let failure = tasks.failure().await;
        let broke = |message: &str| message == "the feed broke";
        assert!(
            matches!(&failure, ServerError::TaskPanicked { task: "change feed", message } if broke(message)),
            "{failure:?}"
        );

        tasks.spawn(Task::UNTIL_STOPPED.named("controller", Stage::Drain), async {});
        let failure = tasks.failure().await;
        assert!(matches!(failure, ServerError::TaskExited { task: "controller" }), "{failure:?}");
        assert_eq!(failure.to_string(), "the controller task stopped while the service was running");
    }

    #[tokio::test]
    async fn stopping_a_stage_waits_for_its_tasks_only() {
        let mut tasks = Tasks::new();
        tasks.spawn(Task::UNTIL_STOPPED.named("controller", Stage::Drain), parked(&tasks, Stage::Drain));
        tasks.spawn(Task::UNTIL_STOPPED.named("http server", Stage::Close), parked(&tasks, Stage::Close));
        tokio::time::timeout(Duration::from_secs(5), tasks.stop(Stage::Drain)).await.expect("the drain stage stops");
        let names: Vec<&str> = tasks.running.values().map(|t| t.name).collect();
        assert_eq!(names, ["http server"]);
    }
}
