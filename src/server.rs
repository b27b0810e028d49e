//! Wires the store, the snapshot and its feed, the controller, the notifier and the HTTP server;
//! runs until shut down.
//!
//! The HTTP server is our own accept loop over hyper's HTTP/1.1 connections, for the limits
//! `axum::serve` does not have: a header-read timeout (a client trickling its request head —
//! slowloris — or idling on a keep-alive connection is cut off), and a cap on open connections
//! (over it a new connection gets a canned 503 `too_many_connections` and is closed at once, so a
//! load balancer tries another replica instead of queueing behind a full one). On shutdown it stops
//! accepting and lets open connections finish their requests (bounded by the grace period).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::clock::{Clock, SystemClock};
use crate::config::{NamedToken, Settings};
use crate::controller::{self, Controller};
use crate::http::auth::{Auth, Scope};
use crate::http::evaluate::EvalState;
use crate::http::signals::PushChecks;
use crate::http::status::OpsInfo;
use crate::http::{self, AppState};
use crate::notify::{self, NotifySettings};
use crate::rollouts::{Request, Rollouts};
use crate::snapshot::{self, Snapshot};
use crate::sources::{SignalStats, SourcesSettings};
use crate::store::{MemoryStore, RedisStore, Store};
use crate::telemetry::Telemetry;

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
}

/// A started service: its address, its state, and the handle that stops it.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    pub controller: Arc<Controller>,
    /// The admin token made up at start when none was configured (printed once on stderr).
    pub generated_token: Option<SecretString>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<(&'static str, Result<(), ServerError>)>,
    grace: Duration,
}

fn token_list(tokens: &[NamedToken], scope: Scope) -> impl Iterator<Item = (Scope, String, String)> + '_ {
    tokens.iter().map(move |t| (scope, t.name.clone(), t.secret.expose_secret().to_owned()))
}

fn generated_token() -> String {
    let mut bytes = [0u8; 24];
    // The OS random source failing leaves zeros; the check below refuses to use them.
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
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
                "no Redis URL given: using the embedded in-memory store; state is not shared between replicas and is lost on exit"
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
    let snapshot = Arc::new(Snapshot::new());
    let signals = Arc::new(SignalStats::default());
    let telemetry = Arc::new(Telemetry::new());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();

    let notify_settings = NotifySettings {
        urls: settings.notify_urls.iter().map(|u| u.expose_secret().to_owned()).collect(),
        ..NotifySettings::default()
    };
    let (notices, notifier) = notify::spawn(notify_settings, Arc::clone(&telemetry), shutdown_rx.clone());
    tasks.spawn(async move {
        let _ = notifier.await;
        ("notifier", Ok(()))
    });
    let replica = controller::replica_id();
    let rollouts = Rollouts::new(Arc::clone(&store), Arc::clone(&snapshot), clock, telemetry)
        .with_notices(notices)
        .with_replica(&replica);

    let mut admin = settings.admin_tokens.clone();
    let mut generated = None;
    if admin.is_empty() {
        let token = generated_token();
        // Printed once, to the terminal only: never through the logs.
        eprintln!("no admin token configured; this process accepts the generated token: {token}");
        generated = Some(SecretString::from(token.clone()));
        admin.push(NamedToken { name: "admin".into(), secret: token.into() });
    }
    let auth = Auth::new(
        token_list(&admin, Scope::Admin)
            .chain(token_list(&settings.read_tokens, Scope::Read))
            .chain(token_list(&settings.metrics_tokens, Scope::Metrics))
            .chain(token_list(&settings.alert_tokens, Scope::Alerts)),
    );
    let state = AppState {
        rollouts: rollouts.clone(),
        auth: Arc::new(auth),
        evaluation: Arc::new(EvalState {
            snapshot: Arc::clone(&rollouts.snapshot),
            telemetry: Arc::clone(&rollouts.telemetry),
            default_flag: settings.default_flag.as_str().into(),
        }),
        max_snapshot_age: settings.resync_every * 3,
        push_checks: Arc::new(PushChecks::new(settings.push_judge_gap)),
        signals: Arc::clone(&signals),
        sources: Arc::new(SourcesSettings {
            alert_flag_label: settings.alert_flag_label.clone(),
            cio_signing_keys: settings.cio_signing_keys.iter().map(|k| k.expose_secret().as_bytes().to_vec()).collect(),
            cio_mapping: settings.cio_mapping.clone(),
        }),
        ops: Arc::new(OpsInfo {
            replica,
            token_generated: generated.is_some(),
            admin_tokens: admin.len(),
            read_tokens: settings.read_tokens.len(),
            metrics_tokens: settings.metrics_tokens.len(),
            alert_tokens: settings.alert_tokens.len(),
            cio_signing_keys: settings.cio_signing_keys.clone(),
            notify_urls: settings.notify_urls.clone(),
            probe: notify::probe_client(),
        }),
    };

    tasks.spawn({
        let (store, snapshot, rx) = (Arc::clone(&store), Arc::clone(&snapshot), shutdown_rx.clone());
        let every = settings.resync_every;
        async move {
            snapshot::run_feed(store, snapshot, every, rx).await;
            ("change feed", Ok(()))
        }
    });
    let controller =
        Arc::new(Controller::new(rollouts.clone(), state.ops.replica.clone(), settings.lease, Arc::clone(&signals)));
    tasks.spawn({
        let (controller, rx, every) = (Arc::clone(&controller), shutdown_rx.clone(), settings.controller_tick);
        async move {
            controller.run(every, rx).await;
            ("controller", Ok(()))
        }
    });
    if !settings.flags.is_empty() {
        tasks.spawn(seed_flags(rollouts, settings.flags.clone(), shutdown_rx.clone()));
    }

    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: settings.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: settings.listen, source })?;
    let app = http::router(state.clone(), settings.request_timeout);
    let limits =
        Limits { header_read_timeout: settings.header_read_timeout, max_connections: settings.max_connections };
    tasks.spawn(async move {
        serve(listener, app, limits, shutdown_rx).await;
        ("http server", Ok(()))
    });
    tracing::info!(%addr, store = store.kind(), "listening");
    Ok(Running { addr, state, controller, generated_token: generated, shutdown, tasks, grace: settings.shutdown_grace })
}

/// What one replica's HTTP server allows its clients.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    max_connections: usize,
}

/// The body of the answer to a connection over the limit.
const TOO_MANY_CONNECTIONS: &str =
    r#"{"error":"too_many_connections","message":"this replica has all the connections it takes; try again"}"#;

/// Serves `app` until `stop` flips, then drains the open connections.
async fn serve(listener: TcpListener, app: Router, limits: Limits, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refuse(&stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Header-read timeouts, resets and clients going away: theirs, not ours.
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers a connection over the limit with a 503, written once without waiting; dropping the
/// stream then closes it.
fn refuse(stream: &TcpStream) {
    tracing::debug!("connection limit reached; refusing a connection");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{TOO_MANY_CONNECTIONS}",
        TOO_MANY_CONNECTIONS.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// Creates the config file's flags that do not exist yet, retrying while the store is down.
async fn seed_flags(
    rollouts: Rollouts,
    flags: std::collections::BTreeMap<String, crate::domain::plan::FlagDefinition>,
    mut shutdown: watch::Receiver<bool>,
) -> (&'static str, Result<(), ServerError>) {
    let req = Request::new("config", "declared in the config file");
    let mut pending: Vec<_> = flags.into_iter().collect();
    while !pending.is_empty() {
        let mut retry = Vec::new();
        for (name, def) in pending {
            match rollouts.ensure(&name, def.clone(), &req).await {
                Ok(true) => tracing::info!(flag = %name, "created from the config file"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(flag = %name, error = %e, "cannot create the flag from the config file yet");
                    retry.push((name, def));
                }
            }
        }
        pending = retry;
        if !pending.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => break,
            }
        }
    }
    ("config flags", Ok(()))
}

impl Running {
    /// Stops taking requests, lets in-flight ones finish within the grace period, stops every task.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let grace = self.grace;
        let drained = tokio::time::timeout(grace, async {
            while let Some(done) = self.tasks.join_next().await {
                if let Ok((task, Err(e))) = done {
                    tracing::error!(task, error = %e, "task failed while stopping");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(?grace, "grace period over; abandoning requests still in flight");
            self.tasks.abort_all();
        }
    }

    /// Stops every task at once without any clean-up, like a crash (for fault tests).
    pub fn kill(mut self) {
        self.tasks.abort_all();
        self.tasks.detach_all();
    }

    /// Runs until a task stops by itself (an error) or the process is told to stop.
    pub async fn until_signal(mut self) -> Result<(), ServerError> {
        let outcome = tokio::select! {
            _ = shutdown_signal() => Ok(()),
            Some(done) = self.tasks.join_next() => match done {
                Ok((task, result)) => {
                    tracing::error!(task, "task exited");
                    result
                }
                Err(e) => {
                    tracing::error!(error = %e, "task panicked");
                    Ok(())
                }
            },
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
