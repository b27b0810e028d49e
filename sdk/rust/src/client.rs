//! The client: builder, local evaluation over the current snapshot, the background task that
//! keeps the snapshot current (`GET /stream`, `GET /flags/config` as the fallback) and the one
//! that pushes outcome reports.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::{StatusCode, Url};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::config::{Change, ConfigBody, FlagConfig, Snapshot};
use crate::eval::{Evaluation, evaluate, is_enabled};
use crate::report::{Cohort, Outbox, Outcome, Sample, Tallies};
use crate::sse;

/// Why a client could not be built. Network trouble is never one: the client starts anyway,
/// answers defaults (or the bootstrap file) and keeps trying.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid service URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("cannot read the bootstrap file {path}")]
    BootstrapRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the bootstrap file {path} is not a flag configuration (the body of GET /flags/config)")]
    BootstrapFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot build the HTTP client")]
    Http(#[from] reqwest::Error),
}

/// A token that never prints.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Options of a [`Client`]; every one has a default.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    token: Option<Secret>,
    metrics_token: Option<Secret>,
    default_value: bool,
    bootstrap_file: Option<PathBuf>,
    init_timeout: Duration,
    request_timeout: Duration,
    stream_idle_timeout: Duration,
    backoff: (Duration, Duration),
    report_interval: Duration,
    report_max_age: Duration,
    max_report_flags: usize,
}

impl ClientBuilder {
    /// Bearer token for reading the configuration (a read or admin token, when the service has read tokens).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret(token.into()));
        self
    }

    /// Bearer token for pushing reports (a metrics or admin token); the read token when unset.
    pub fn metrics_token(mut self, token: impl Into<String>) -> Self {
        self.metrics_token = Some(Secret(token.into()));
        self
    }

    /// What an unknown flag answers, and every flag before any configuration arrives (default `false`).
    pub fn default_value(mut self, value: bool) -> Self {
        self.default_value = value;
        self
    }

    /// A file holding a `GET /flags/config` body, served until the service answers: the client
    /// works offline, and `build` does not wait for the network.
    pub fn bootstrap_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.bootstrap_file = Some(path.into());
        self
    }

    /// How long `build` waits for the first configuration from the service (default 5 s).
    pub fn init_timeout(mut self, wait: Duration) -> Self {
        self.init_timeout = wait;
        self
    }

    /// Bound on each configuration fetch, report push and stream opening (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// A stream silent this long is reconnected (default 40 s; the service sends a heartbeat every 15 s).
    pub fn stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.stream_idle_timeout = timeout;
        self
    }

    /// Reconnection delays: from `base` doubling up to `max`, jittered (default 250 ms to 30 s).
    pub fn reconnect_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff = (base, max);
        self
    }

    /// How often recorded outcomes are pushed (default 5 s).
    pub fn report_interval(mut self, interval: Duration) -> Self {
        self.report_interval = interval;
        self
    }

    /// Reports the service could not take for this long are dropped and counted (default 60 s).
    pub fn report_max_age(mut self, age: Duration) -> Self {
        self.report_max_age = age;
        self
    }

    /// Most flags with outcomes held between two pushes; outcomes of further flags are dropped (default 1,000).
    pub fn max_report_flags(mut self, flags: usize) -> Self {
        self.max_report_flags = flags;
        self
    }

    /// Starts the client; returns once a configuration is in hand (the bootstrap file's at once,
    /// else the service's) or `init_timeout` has passed.
    pub async fn build(self) -> Result<Client, Error> {
        let base = parse_base(&self.url)?;
        let http = http_client(self.request_timeout).build()?;
        // The stream's client keeps no idle connection, so a stream always opens its own: the
        // service serves a connection that starts with `GET /stream` at a fraction of the memory
        // of one that served other requests first (its docs/clients.md, "Figures").
        let sync_http = http_client(self.request_timeout).pool_max_idle_per_host(0).build()?;
        let bootstrap = match &self.bootstrap_file {
            Some(path) => Some(read_bootstrap(path).await?),
            None => None,
        };
        let shared = Arc::new(Shared {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            default_value: self.default_value,
            tallies: Tallies::new(self.max_report_flags),
            ready: watch::Sender::new(false),
            updates: watch::Sender::new(0),
            connected: AtomicBool::new(false),
        });
        if let Some(body) = bootstrap {
            shared.replace(Snapshot::from_body(body));
        }
        let (stop, stopped) = watch::channel(false);
        let sync = Sync {
            shared: shared.clone(),
            http: sync_http,
            config_url: endpoint(&base, &["flags", "config"]),
            stream_url: endpoint(&base, &["stream"]),
            token: self.token.clone(),
            options: self.clone(),
        };
        let reporter = Reporter {
            shared: shared.clone(),
            http,
            base,
            token: self.metrics_token.clone().or(self.token.clone()),
            request_timeout: self.request_timeout,
        };
        let handles = vec![
            tokio::spawn(sync.run(stopped.clone())),
            tokio::spawn(reporter.run(self.report_interval, self.report_max_age, stopped)),
        ];
        let client = Client { shared, tasks: Arc::new(Tasks { stop, handles: Mutex::new(handles) }) };
        if !client.is_ready() {
            let mut ready = client.shared.ready.subscribe();
            if tokio::time::timeout(self.init_timeout, ready.wait_for(|r| *r)).await.is_err() {
                tracing::warn!(wait = ?self.init_timeout, "no flag configuration yet: answering defaults until it arrives");
            }
        }
        Ok(client)
    }
}

fn parse_base(url: &str) -> Result<Url, Error> {
    let invalid = |reason| Error::InvalidUrl { url: url.to_owned(), reason };
    let base = Url::parse(url).map_err(|_| invalid("not a URL"))?;
    if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
        return Err(invalid("the scheme must be http or https"));
    }
    Ok(base)
}

/// `base` with `segments` appended as percent-encoded path segments.
fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    // Always Ok: `parse_base` refused URLs that cannot be a base.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

async fn read_bootstrap(path: &PathBuf) -> Result<ConfigBody, Error> {
    let text = tokio::fs::read(path).await.map_err(|source| Error::BootstrapRead { path: path.clone(), source })?;
    serde_json::from_slice(&text).map_err(|source| Error::BootstrapFormat { path: path.clone(), source })
}

/// What the application threads and the background tasks share.
#[derive(Debug)]
struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    default_value: bool,
    tallies: Tallies,
    /// `true` once any configuration (bootstrap or service) is in hand.
    ready: watch::Sender<bool>,
    /// How many configurations have been applied; bumped after each one is in place.
    updates: watch::Sender<u64>,
    connected: AtomicBool,
}

impl Shared {
    fn current(&self) -> Arc<Snapshot> {
        // A poisoned lock only means a writer panicked between statements that cannot panic.
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, snapshot: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        self.ready.send_replace(true);
        self.updates.send_modify(|n| *n += 1);
    }

    fn evaluate(&self, flag: &str, user: &str, default: bool) -> Evaluation {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        evaluate(&snapshot, flag, user, default)
    }

    fn is_enabled(&self, flag: &str, user: &str, default: bool) -> bool {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        is_enabled(&snapshot, flag, user, default)
    }
}

/// A flag client. Cheap to clone (clones share everything); evaluation is local and never waits.
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
    tasks: Arc<Tasks>,
}

/// Dropping the last clone drops `stop`, which ends the background tasks.
#[derive(Debug)]
struct Tasks {
    stop: watch::Sender<bool>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Client {
    /// A builder for a client of the service at `url` (e.g. `http://rollout:8080`).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            token: None,
            metrics_token: None,
            default_value: false,
            bootstrap_file: None,
            init_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(40),
            backoff: (Duration::from_millis(250), Duration::from_secs(30)),
            report_interval: Duration::from_secs(5),
            report_max_age: Duration::from_secs(60),
            max_report_flags: 1_000,
        }
    }

    /// Whether `flag` is on for `user`; an unknown flag answers the client's default.
    pub fn is_enabled(&self, flag: &str, user: &str) -> bool {
        self.shared.is_enabled(flag, user, self.shared.default_value)
    }

    /// Like [`Client::is_enabled`], with this call's own default for an unknown flag.
    pub fn is_enabled_or(&self, flag: &str, user: &str, default: bool) -> bool {
        self.shared.is_enabled(flag, user, default)
    }

    /// The answer with its reason and the flag version it came from.
    pub fn evaluation(&self, flag: &str, user: &str) -> Evaluation {
        self.shared.evaluate(flag, user, self.shared.default_value)
    }

    /// Like [`Client::evaluation`], with this call's own default for an unknown flag.
    pub fn evaluation_or(&self, flag: &str, user: &str, default: bool) -> Evaluation {
        self.shared.evaluate(flag, user, default)
    }

    /// A flag's configuration as last received, if known.
    pub fn flag(&self, flag: &str) -> Option<FlagConfig> {
        self.shared.current().flags.get(flag).map(|f| f.config.clone())
    }

    /// Whether any configuration is in hand (bootstrap file or service).
    pub fn is_ready(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// Wakes on every configuration the client applies (a snapshot, a change, a fetch): for an
    /// app that re-reads flags when they change instead of on every request. The value counts the
    /// configurations applied so far; `changed().await` returns once a newer one is in place, so
    /// an evaluation right after it already answers from it.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.updates.subscribe()
    }

    /// Whether the change stream is open right now (the last known configuration is served either way).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Counts an outcome for `flag` in the user's cohort (treatment when the flag enables them
    /// now, control otherwise). Never waits on the network; pushed in the background.
    pub fn record(&self, flag: &str, user: &str, outcome: Outcome) {
        let cohort = if self.is_enabled(flag, user) { Cohort::Treatment } else { Cohort::Control };
        self.shared.tallies.record(flag, cohort, outcome);
    }

    /// How many recorded outcomes were discarded: past `max_report_flags`, refused by the
    /// service (e.g. an unknown flag), or undeliverable for longer than `report_max_age`.
    pub fn dropped_reports(&self) -> u64 {
        self.shared.tallies.dropped()
    }

    /// Stops the background tasks after one last push of the recorded outcomes. Evaluation keeps
    /// answering from the last configuration. Idempotent.
    pub async fn close(&self) {
        self.tasks.stop.send_replace(true);
        let handles = std::mem::take(&mut *self.tasks.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in handles {
            if let Err(e) = handle.await {
                tracing::warn!(error = %e, "a rollout-sdk background task ended abnormally");
            }
        }
        self.shared.connected.store(false, Ordering::Relaxed);
    }
}

/// Resolves once `close` was called or every client handle is gone.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: that is a stop too.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Why a connection or a fetch ended.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("request failed")]
    Http(#[from] reqwest::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the service answered {0}")]
    Status(StatusCode),
    #[error("the answer is not an event stream")]
    NotEventStream,
    #[error("the stream was silent for {0:?}")]
    Idle(Duration),
    #[error("the stream ended")]
    Ended,
    #[error("bad event-stream framing")]
    Framing(#[from] sse::LineTooLong),
    #[error("undecodable {event} event")]
    Decode {
        event: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The task that keeps the snapshot current.
struct Sync {
    shared: Arc<Shared>,
    /// Keeps no idle connection: each stream (and fallback fetch) opens its own.
    http: reqwest::Client,
    config_url: Url,
    stream_url: Url,
    token: Option<Secret>,
    options: ClientBuilder,
}

/// The SDK's HTTP client settings.
fn http_client(connect_timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .user_agent(concat!("rollout-sdk-rust/", env!("CARGO_PKG_VERSION")))
}

impl Sync {
    /// Stream; when the stream cannot be had, fetch `/flags/config` instead; back off; again.
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let (base, max) = self.options.backoff;
        let mut backoff = Backoff::new(base, max);
        let mut last_event_id: Option<String> = None;
        let mut etag: Option<String> = None;
        loop {
            let mut delivered = false;
            let ended = tokio::select! {
                () = stopped(&mut stop) => return,
                e = self.stream(&mut last_event_id, &mut delivered) => e,
            };
            self.shared.connected.store(false, Ordering::Relaxed);
            if let SyncError::Decode { .. } = ended {
                // An event we could not apply: replaying after it would skip it; resynchronize.
                last_event_id = None;
            }
            if delivered {
                backoff.reset();
                tracing::info!(error = %ended, "flag stream disconnected; reconnecting");
            } else {
                tracing::warn!(error = %ended, "flag stream unavailable; fetching the configuration instead");
                let fetched = tokio::select! {
                    () = stopped(&mut stop) => return,
                    r = self.fetch_config(&mut etag) => r,
                };
                match fetched {
                    // The stream resumes from a fresh snapshot rather than replaying older changes over it.
                    Ok(true) => last_event_id = None,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot fetch the flag configuration; serving the last known"),
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = stopped(&mut stop) => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(&token.0),
            None => request,
        }
    }

    /// One stream connection, until it ends; `delivered` tells whether any event was applied.
    async fn stream(&self, last_event_id: &mut Option<String>, delivered: &mut bool) -> SyncError {
        let mut request = self
            .authorized(self.http.get(self.stream_url.clone()))
            .header(ACCEPT, "text/event-stream")
            .header(CACHE_CONTROL, "no-cache");
        if let Some(id) = last_event_id.as_deref() {
            request = request.header("Last-Event-ID", id);
        }
        let timeout = self.options.request_timeout;
        let mut response = match tokio::time::timeout(timeout, request.send()).await {
            Err(_) => return SyncError::Timeout(timeout),
            Ok(Err(e)) => return e.into(),
            Ok(Ok(r)) if !r.status().is_success() => return SyncError::Status(r.status()),
            Ok(Ok(r)) => r,
        };
        let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !content_type.starts_with("text/event-stream") {
            return SyncError::NotEventStream;
        }
        let mut parser = sse::Parser::default();
        let idle = self.options.stream_idle_timeout;
        loop {
            let chunk = match tokio::time::timeout(idle, response.chunk()).await {
                Err(_) => return SyncError::Idle(idle),
                Ok(Err(e)) => return e.into(),
                Ok(Ok(None)) => return SyncError::Ended,
                Ok(Ok(Some(chunk))) => chunk,
            };
            let events = match parser.push(&chunk) {
                Ok(events) => events,
                Err(e) => return e.into(),
            };
            for event in events {
                if let Err(e) = self.apply(&event) {
                    return e;
                }
                *delivered = true;
                if event.id.is_some() {
                    last_event_id.clone_from(&event.id);
                }
            }
        }
    }

    fn apply(&self, event: &sse::Event) -> Result<(), SyncError> {
        let decode = |source| SyncError::Decode { event: event.event.clone(), source };
        match event.event.as_str() {
            "snapshot" => {
                let body: ConfigBody = serde_json::from_str(&event.data).map_err(decode)?;
                self.shared.replace(Snapshot::from_body(body));
            }
            "change" => {
                let change = Change::parse(&event.data).map_err(decode)?;
                let next = self.shared.current().with_change(change);
                self.shared.replace(next);
            }
            // Event types this client does not know are left for newer clients.
            _ => return Ok(()),
        }
        self.shared.connected.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// `GET /flags/config` with the last ETag; `Ok(true)` when a new configuration was applied.
    async fn fetch_config(&self, etag: &mut Option<String>) -> Result<bool, SyncError> {
        let mut request = self.authorized(self.http.get(self.config_url.clone())).timeout(self.options.request_timeout);
        if let Some(tag) = etag.as_deref() {
            request = request.header(IF_NONE_MATCH, tag);
        }
        let response = request.send().await?;
        match response.status() {
            StatusCode::NOT_MODIFIED => return Ok(false),
            status if !status.is_success() => return Err(SyncError::Status(status)),
            _ => {}
        }
        let tag = response.headers().get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = response.bytes().await?;
        let body: ConfigBody =
            serde_json::from_slice(&bytes).map_err(|source| SyncError::Decode { event: "config".into(), source })?;
        self.shared.replace(Snapshot::from_body(body));
        *etag = tag;
        Ok(true)
    }
}

/// The task that pushes recorded outcomes.
struct Reporter {
    shared: Arc<Shared>,
    http: reqwest::Client,
    base: Url,
    token: Option<Secret>,
    request_timeout: Duration,
}

/// How a push failed.
enum PushError {
    /// The service refused this sample (4xx other than 408/429): sending it again cannot help.
    Refused(StatusCode),
    /// Unreachable, overloaded or failing: try again later.
    Retry,
}

impl Reporter {
    async fn run(self, interval: Duration, max_age: Duration, mut stop: watch::Receiver<bool>) {
        let mut outbox = Outbox::new(max_age);
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = stopped(&mut stop) => break,
                _ = tick.tick() => {}
            }
            self.flush(&mut outbox).await;
        }
        // Last push on the way out; whatever still cannot go is dropped and counted.
        self.flush(&mut outbox).await;
        let left: u64 = outbox.drain().iter().map(|(s, _)| s.requests).sum();
        self.shared.tallies.count_dropped(left);
    }

    async fn flush(&self, outbox: &mut Outbox) {
        let tallies = &self.shared.tallies;
        let now = Instant::now();
        tallies.count_dropped(outbox.add(tallies.take(), now));
        let mut unreachable = false;
        for (sample, since) in outbox.drain() {
            if unreachable {
                tallies.count_dropped(outbox.retry(sample, since, now));
                continue;
            }
            match self.push(&sample).await {
                Ok(()) => {}
                Err(PushError::Refused(status)) => {
                    tracing::warn!(flag = %sample.flag, %status, "the service refused a report; dropped");
                    tallies.count_dropped(sample.requests);
                }
                Err(PushError::Retry) => {
                    // One failure says the service is unreachable: the rest wait for the next round.
                    unreachable = true;
                    tallies.count_dropped(outbox.retry(sample, since, now));
                }
            }
        }
    }

    async fn push(&self, sample: &Sample) -> Result<(), PushError> {
        let url = endpoint(&self.base, &["flags", &sample.flag, "metrics"]);
        let mut request = self.http.post(url).json(sample).timeout(self.request_timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(&token.0);
        }
        let status = match request.send().await {
            Ok(response) => response.status(),
            Err(e) => {
                tracing::debug!(error = %e, "report push failed");
                return Err(PushError::Retry);
            }
        };
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => Err(PushError::Retry),
            s if s.is_client_error() => Err(PushError::Refused(s)),
            _ => Err(PushError::Retry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_a_base_path_and_encode_flag_names() {
        let base = parse_base("http://host:8080/rollout/").expect("a base");
        assert_eq!(endpoint(&base, &["stream"]).as_str(), "http://host:8080/rollout/stream");
        let plain = parse_base("https://host").expect("a base");
        assert_eq!(endpoint(&plain, &["flags", "a b/c", "metrics"]).as_str(), "https://host/flags/a%20b%2Fc/metrics");
        assert!(parse_base("mailto:x@example.com").is_err());
        assert!(parse_base("not a url").is_err());
    }

    #[test]
    fn tokens_never_print() {
        let builder = Client::builder("http://host").token("s3cret").metrics_token("m3trics");
        let printed = format!("{builder:?}");
        assert!(!printed.contains("s3cret") && !printed.contains("m3trics"), "{printed}");
    }
}
