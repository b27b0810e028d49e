//! Typed settings, layered: defaults → optional TOML file → environment (`ROLLOUT_*`) → flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::duration;
use crate::domain::plan::{FlagDefinition, valid_flag_name};
use crate::notify::{Event, Format, Target};
use crate::sources::customerio::FlagMapping;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// `rollout serve` options. Each also reads its `ROLLOUT_*` variable and, below that, the config
/// file, which has every setting but the tokens, the signing keys and `ROLLOUT_NOTIFY_URLS` (the
/// file has its own `[[notify]]` targets).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "ROLLOUT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Redis URL (redis:// or rediss://); unset = the embedded in-memory store (not shared, not kept)
    #[arg(long, env = "ROLLOUT_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Redis Cluster seed node URLs, comma-separated (instead of --redis-url); any reachable one
    /// finds the others
    #[arg(long, env = "ROLLOUT_REDIS_CLUSTER_URLS", value_delimiter = ',', hide_env_values = true)]
    pub redis_cluster_urls: Vec<String>,
    /// PEM file of the CA that signed the Redis server's certificate (rediss:// with a private CA);
    /// unset = the public web PKI roots
    #[arg(long, env = "ROLLOUT_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Prefix of every Redis key and channel [default: rollout]
    #[arg(long, env = "ROLLOUT_KEY_PREFIX")]
    pub key_prefix: Option<String>,
    /// Flag answered by GET /flag/{user} [default: default]
    #[arg(long, env = "ROLLOUT_DEFAULT_FLAG")]
    pub default_flag: Option<String>,
    /// TOML file with settings and flags to create at start-up when absent (or to reconcile: see
    /// `reconcile = true` in docs/configuration.md)
    #[arg(long, env = "ROLLOUT_CONFIG")]
    pub config: Option<PathBuf>,
    /// On the first start on an empty store, create the default flag (runbook plan, pending) so
    /// that `GET /flag/{user}` answers at once [default: true]
    #[arg(long, env = "ROLLOUT_CREATE_DEFAULT_FLAG", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub create_default_flag: Option<bool>,
    /// Log output [default: pretty]
    #[arg(long, env = "ROLLOUT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Admin tokens, `name:token` or bare `token`; repeatable or comma-separated
    #[arg(long = "admin-token", env = "ROLLOUT_ADMIN_TOKENS", value_delimiter = ',', hide_env_values = true)]
    pub admin_tokens: Vec<String>,
    /// Read tokens; when set, evaluations need one (or an admin token)
    #[arg(long = "read-token", env = "ROLLOUT_READ_TOKENS", value_delimiter = ',', hide_env_values = true)]
    pub read_tokens: Vec<String>,
    /// Metrics tokens: may push guard metrics (and read health); repeatable or comma-separated
    #[arg(long = "metrics-token", env = "ROLLOUT_METRICS_TOKENS", value_delimiter = ',', hide_env_values = true)]
    pub metrics_tokens: Vec<String>,
    /// Alert tokens: may post Alertmanager webhooks, nothing else; repeatable or comma-separated
    #[arg(long = "alert-token", env = "ROLLOUT_ALERT_TOKENS", value_delimiter = ',', hide_env_values = true)]
    pub alert_tokens: Vec<String>,
    /// Alert label naming the flag to roll back (`rollout_flag` is accepted too) [default: flag]
    #[arg(long, env = "ROLLOUT_ALERT_FLAG_LABEL")]
    pub alert_flag_label: Option<String>,
    /// Customer.io reporting-webhook signing keys (several during a rotation); none = endpoint off
    #[arg(long = "cio-signing-key", env = "ROLLOUT_CIO_SIGNING_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub cio_signing_keys: Vec<String>,
    /// Flag that Customer.io events of unmapped messages count for
    #[arg(long, env = "ROLLOUT_CIO_DEFAULT_FLAG")]
    pub cio_default_flag: Option<String>,
    /// Webhook URLs POSTed on every transition (Slack-compatible); repeatable or comma-separated
    #[arg(long = "notify-url", env = "ROLLOUT_NOTIFY_URLS", value_delimiter = ',', hide_env_values = true)]
    pub notify_urls: Vec<String>,
    /// The dashboard's URL as users reach it (e.g. `https://rollouts.example.com/ui/`): the link
    /// in Slack, Teams and Discord notifications [default: none, no link]
    #[arg(long, env = "ROLLOUT_DASHBOARD_URL")]
    pub dashboard_url: Option<String>,
    /// Controller tick: how often the leader judges every running flag, in ms [default: 1000]
    #[arg(long, env = "ROLLOUT_CONTROLLER_TICK_MS", value_parser = duration::parse_millis)]
    pub controller_tick_ms: Option<u64>,
    /// Leader lease length in ms; a dead leader is replaced within this [default: 5000]
    #[arg(long, env = "ROLLOUT_LEASE_MS", value_parser = duration::parse_millis)]
    pub lease_ms: Option<u64>,
    /// A metrics push judges its flag at once, at most once per this many ms per flag (later pushes
    /// are judged at the end of the gap) [default: 50]
    #[arg(long, env = "ROLLOUT_PUSH_JUDGE_GAP_MS", value_parser = duration::parse_millis)]
    pub push_judge_gap_ms: Option<u64>,
    /// Full re-read of the store every this many seconds, repairing missed change messages [default: 5]
    #[arg(long, env = "ROLLOUT_RESYNC_SECS", value_parser = duration::parse_secs)]
    pub resync_secs: Option<u64>,
    /// Requests taking longer are answered 408 [default: 10]
    #[arg(long, env = "ROLLOUT_REQUEST_TIMEOUT_SECS", value_parser = duration::parse_secs)]
    pub request_timeout_secs: Option<u64>,
    /// On SIGTERM/Ctrl-C, first this many seconds of draining: `/readyz` answers 503 so load
    /// balancers stop sending, every other request is still served (and told `connection: close`);
    /// 0 = none [default: 5]
    #[arg(long, env = "ROLLOUT_DRAIN_SECS", value_parser = duration::parse_secs)]
    pub drain_secs: Option<u64>,
    /// After the drain, in-flight requests and queued notifications get this long to finish [default: 10]
    #[arg(long, env = "ROLLOUT_SHUTDOWN_GRACE_SECS", value_parser = duration::parse_secs)]
    pub shutdown_grace_secs: Option<u64>,
    /// A connection that has not sent a complete request head within this many seconds (idle
    /// keep-alive connections included) is closed [default: 10]
    #[arg(long, env = "ROLLOUT_HEADER_READ_TIMEOUT_SECS", value_parser = duration::parse_secs)]
    pub header_read_timeout_secs: Option<u64>,
    /// A connection whose client takes none of its answer for this many seconds (its socket stays
    /// full) is closed [default: 10]
    #[arg(long, env = "ROLLOUT_WRITE_TIMEOUT_SECS", value_parser = duration::parse_secs)]
    pub write_timeout_secs: Option<u64>,
    /// Open connections at most; over it a new connection is answered 503 and closed [default: 10000]
    #[arg(long, env = "ROLLOUT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Browser origins allowed to call the evaluation, config, stream and OFREP routes (CORS),
    /// exact (`https://app.example.com`), comma-separated; none = no CORS headers [default: none]
    #[arg(long, env = "ROLLOUT_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Open `GET /stream` clients at most; over it a new one is answered 503 [default: 10000]
    #[arg(long, env = "ROLLOUT_MAX_STREAM_CLIENTS")]
    pub max_stream_clients: Option<usize>,
    /// A stream with nothing to send sends a heartbeat comment every this many seconds [default: 15]
    #[arg(long, env = "ROLLOUT_STREAM_HEARTBEAT_SECS", value_parser = duration::parse_secs)]
    pub stream_heartbeat_secs: Option<u64>,
    /// Path prefix the service is reached under behind an ingress that keeps it (`/rollout`):
    /// every route is served under it as well as at the root [default: none]
    #[arg(long, env = "ROLLOUT_BASE_PATH")]
    pub base_path: Option<String>,
}

/// What the config file may hold. Tokens and signing keys stay out of it: pass them through the
/// environment (a `[[notify]]` target may too, with `url_env`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub redis_url: Option<String>,
    pub redis_cluster_urls: Option<Vec<String>>,
    pub redis_ca_file: Option<PathBuf>,
    pub key_prefix: Option<String>,
    pub default_flag: Option<String>,
    pub create_default_flag: Option<bool>,
    pub log_format: Option<LogFormat>,
    #[serde(default, deserialize_with = "duration::opt_secs")]
    pub resync_secs: Option<u64>,
    #[serde(default, deserialize_with = "duration::opt_secs")]
    pub request_timeout_secs: Option<u64>,
    #[serde(default, deserialize_with = "duration::opt_secs")]
    pub drain_secs: Option<u64>,
    #[serde(default, deserialize_with = "duration::opt_secs")]
    pub shutdown_grace_secs: Option<u64>,
    #[serde(default, deserialize_with = "duration::opt_secs")]
    pub header_read_timeout_secs: Option<u64>,
    #[serde(default, deserialize_with = "duration::opt_secs")]
    pub write_timeout_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub cors_origins: Option<Vec<String>>,
    pub max_stream_clients: Option<usize>,
    #[serde(default, deserialize_with = "duration::opt_secs")]
    pub stream_heartbeat_secs: Option<u64>,
    pub base_path: Option<String>,
    #[serde(default, deserialize_with = "duration::opt_millis")]
    pub controller_tick_ms: Option<u64>,
    #[serde(default, deserialize_with = "duration::opt_millis")]
    pub lease_ms: Option<u64>,
    #[serde(default, deserialize_with = "duration::opt_millis")]
    pub push_judge_gap_ms: Option<u64>,
    pub alert_flag_label: Option<String>,
    pub dashboard_url: Option<String>,
    /// Notification receivers, each with its format and events (`[[notify]]` tables).
    #[serde(default)]
    pub notify: Vec<NotifyEntry>,
    /// Customer.io message id → flag mapping (`campaigns`, `broadcasts`, `transactional_messages`, `default_flag`).
    #[serde(default)]
    pub customerio: FlagMapping,
    #[serde(default)]
    pub flags: BTreeMap<String, ConfigFlag>,
}

/// A flag of the config file: its definition (the fields of `PUT /flags/{flag}`) and whether the
/// service applies it at every start (`reconcile = true`) or only creates it when absent.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigFlag {
    pub reconcile: bool,
    pub definition: FlagDefinition,
}

impl<'de> Deserialize<'de> for ConfigFlag {
    /// `reconcile` taken out first, so that the definition keeps refusing unknown fields (serde's
    /// `flatten` would let typos through).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut fields = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let reconcile = match fields.remove("reconcile") {
            None => false,
            Some(serde_json::Value::Bool(b)) => b,
            Some(_) => return Err(D::Error::custom("reconcile: expected true or false")),
        };
        let definition = FlagDefinition::deserialize(serde_json::Value::Object(fields)).map_err(D::Error::custom)?;
        Ok(ConfigFlag { reconcile, definition })
    }
}

/// One `[[notify]]` table: the URL (or the environment variable holding it, to keep a secret URL
/// out of the file), the format, the events (all when left out; an unknown name is refused).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyEntry {
    pub url: Option<String>,
    pub url_env: Option<String>,
    #[serde(default)]
    pub format: Format,
    pub events: Option<Vec<Event>>,
}

impl NotifyEntry {
    fn resolve(self, index: usize) -> Result<Target, ConfigError> {
        let invalid = |what: String| ConfigError::Invalid(format!("[[notify]] number {}: {what}", index + 1));
        let url = match (self.url, self.url_env) {
            (Some(url), None) => url,
            (None, Some(var)) => {
                std::env::var(&var).map_err(|_| invalid(format!("environment variable {var} is not set")))?
            }
            _ => return Err(invalid("give either url or url_env".into())),
        };
        if !crate::domain::plan::valid_http_url(&url) {
            return Err(invalid("the URL must be an http:// or https:// URL".into()));
        }
        if self.events.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid("events is empty; leave it out to receive every event".into()));
        }
        Ok(Target { url, format: self.format, events: self.events.map(|e| e.into_iter().collect()) })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A token with the name it shows up as in the audit log.
#[derive(Debug, Clone)]
pub struct NamedToken {
    pub name: String,
    pub secret: SecretString,
}

/// The resolved settings of `rollout serve`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub redis_url: Option<SecretString>,
    /// Seed nodes of a Redis Cluster; empty = not a cluster.
    pub redis_cluster_urls: Vec<SecretString>,
    /// CA certificate (PEM) trusted for `rediss://`, instead of the public roots.
    pub redis_ca_file: Option<PathBuf>,
    pub key_prefix: String,
    pub default_flag: String,
    /// Create the default flag on the first start on an empty store.
    pub create_default_flag: bool,
    pub log_format: LogFormat,
    pub admin_tokens: Vec<NamedToken>,
    pub read_tokens: Vec<NamedToken>,
    pub metrics_tokens: Vec<NamedToken>,
    pub alert_tokens: Vec<NamedToken>,
    pub alert_flag_label: String,
    pub cio_signing_keys: Vec<SecretString>,
    pub cio_mapping: FlagMapping,
    /// `ROLLOUT_NOTIFY_URLS`: every event, in the generic format.
    pub notify_urls: Vec<SecretString>,
    /// The config file's `[[notify]]` targets.
    pub notify_targets: Vec<Target>,
    /// Where notifications link to the dashboard.
    pub dashboard_url: Option<String>,
    pub controller_tick: Duration,
    pub lease: Duration,
    pub push_judge_gap: Duration,
    pub resync_every: Duration,
    pub request_timeout: Duration,
    /// On shutdown, how long `/readyz` answers 503 while everything else is still served.
    pub drain: Duration,
    pub shutdown_grace: Duration,
    /// Slowloris guard: the whole request head must arrive within this (also ends idle connections).
    pub header_read_timeout: Duration,
    /// Slow-reader guard: a write the client's socket takes no byte of for this long closes the connection.
    pub write_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Origins whose browser pages may call the client routes (CORS); empty = none.
    pub cors_origins: Vec<String>,
    pub max_stream_clients: usize,
    /// A stream with nothing to send sends a heartbeat after this long.
    pub stream_heartbeat: Duration,
    /// A stream client this many changes behind is dropped (not a command-line setting).
    pub stream_buffer: usize,
    /// Every route is also served under this prefix (`/rollout`, no trailing slash); empty = none.
    pub base_path: String,
    pub flags: BTreeMap<String, ConfigFlag>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            redis_url: None,
            redis_cluster_urls: Vec::new(),
            redis_ca_file: None,
            key_prefix: "rollout".into(),
            default_flag: "default".into(),
            create_default_flag: true,
            log_format: LogFormat::Pretty,
            admin_tokens: Vec::new(),
            read_tokens: Vec::new(),
            metrics_tokens: Vec::new(),
            alert_tokens: Vec::new(),
            alert_flag_label: "flag".into(),
            cio_signing_keys: Vec::new(),
            cio_mapping: FlagMapping::default(),
            notify_urls: Vec::new(),
            notify_targets: Vec::new(),
            dashboard_url: None,
            controller_tick: Duration::from_secs(1),
            lease: Duration::from_secs(5),
            push_judge_gap: Duration::from_millis(50),
            resync_every: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            cors_origins: Vec::new(),
            max_stream_clients: 10_000,
            stream_heartbeat: Duration::from_secs(15),
            stream_buffer: crate::snapshot::DEFAULT_FOLLOWER_BUFFER,
            base_path: String::new(),
            flags: BTreeMap::new(),
        }
    }
}

/// `name:token` or a bare token (named `default_name`, numbered when there are several).
pub fn parse_tokens(raw: &[String], default_name: &str) -> Result<Vec<NamedToken>, ConfigError> {
    let raw: Vec<&str> = raw.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
    let mut tokens = Vec::with_capacity(raw.len());
    for (i, entry) in raw.iter().enumerate() {
        let (name, secret) = match entry.split_once(':') {
            Some((name, secret)) => (name.to_owned(), secret),
            None if raw.len() == 1 => (default_name.to_owned(), *entry),
            None => (format!("{default_name}{}", i + 1), *entry),
        };
        if secret.len() < 8 {
            return Err(ConfigError::Invalid(format!("token {name:?} is shorter than 8 characters")));
        }
        tokens.push(NamedToken { name, secret: SecretString::from(secret.to_owned()) });
    }
    Ok(tokens)
}

/// The entries of a list of secrets, trimmed, empty ones dropped.
fn secrets(raw: &[String]) -> Vec<SecretString> {
    raw.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).map(|s| SecretString::from(s.to_owned())).collect()
}

/// The entries of a list of origins, trimmed, empty ones dropped.
fn origins(raw: &Option<Vec<String>>) -> Vec<String> {
    raw.iter().flatten().map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// A path prefix without its trailing slashes (`/` alone is no prefix).
fn base_path(raw: Option<String>) -> String {
    raw.map(|p| p.trim().trim_end_matches('/').to_owned()).unwrap_or_default()
}

/// `/segment[/segment…]` of unreserved URL characters: a prefix routes can be nested under.
fn valid_base_path(path: &str) -> bool {
    path.strip_prefix('/').is_some_and(|rest| {
        rest.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        })
    })
}

/// `http(s)://host[:port]` with nothing after it: what a browser sends as `Origin`.
fn valid_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")) else {
        return false;
    };
    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)) && !rest.ends_with(':')
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
}

impl Settings {
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let d = Settings::default();
        let secs = |flag: Option<u64>, file: Option<u64>, default: Duration| {
            flag.or(file).map_or(default, Duration::from_secs)
        };
        let millis = |flag: Option<u64>, file: Option<u64>, default: Duration| {
            flag.or(file).map_or(default, Duration::from_millis)
        };
        let cluster_urls = Some(args.redis_cluster_urls.clone()).filter(|urls| !urls.is_empty());
        let settings = Settings {
            listen: args.listen.or(file.listen).unwrap_or(d.listen),
            redis_url: args.redis_url.clone().or(file.redis_url).filter(|u| !u.is_empty()).map(SecretString::from),
            redis_cluster_urls: secrets(&cluster_urls.or(file.redis_cluster_urls).unwrap_or_default()),
            redis_ca_file: args.redis_ca_file.clone().or(file.redis_ca_file),
            key_prefix: args.key_prefix.clone().or(file.key_prefix).unwrap_or(d.key_prefix),
            default_flag: args.default_flag.clone().or(file.default_flag).unwrap_or(d.default_flag),
            create_default_flag: args.create_default_flag.or(file.create_default_flag).unwrap_or(d.create_default_flag),
            log_format: args.log_format.or(file.log_format).unwrap_or(d.log_format),
            admin_tokens: parse_tokens(&args.admin_tokens, "admin")?,
            read_tokens: parse_tokens(&args.read_tokens, "reader")?,
            metrics_tokens: parse_tokens(&args.metrics_tokens, "metrics")?,
            alert_tokens: parse_tokens(&args.alert_tokens, "alertmanager")?,
            alert_flag_label: args.alert_flag_label.clone().or(file.alert_flag_label).unwrap_or(d.alert_flag_label),
            cio_signing_keys: secrets(&args.cio_signing_keys),
            cio_mapping: FlagMapping {
                default_flag: args.cio_default_flag.clone().or(file.customerio.default_flag.clone()),
                ..file.customerio
            },
            notify_urls: secrets(&args.notify_urls),
            notify_targets: file.notify.into_iter().enumerate().map(|(i, n)| n.resolve(i)).collect::<Result<_, _>>()?,
            dashboard_url: args.dashboard_url.clone().or(file.dashboard_url).filter(|u| !u.is_empty()),
            controller_tick: millis(args.controller_tick_ms, file.controller_tick_ms, d.controller_tick),
            lease: millis(args.lease_ms, file.lease_ms, d.lease),
            push_judge_gap: millis(args.push_judge_gap_ms, file.push_judge_gap_ms, d.push_judge_gap),
            resync_every: secs(args.resync_secs, file.resync_secs, d.resync_every),
            request_timeout: secs(args.request_timeout_secs, file.request_timeout_secs, d.request_timeout),
            drain: secs(args.drain_secs, file.drain_secs, d.drain),
            shutdown_grace: secs(args.shutdown_grace_secs, file.shutdown_grace_secs, d.shutdown_grace),
            header_read_timeout: secs(
                args.header_read_timeout_secs,
                file.header_read_timeout_secs,
                d.header_read_timeout,
            ),
            write_timeout: secs(args.write_timeout_secs, file.write_timeout_secs, d.write_timeout),
            max_connections: args.max_connections.or(file.max_connections).unwrap_or(d.max_connections),
            cors_origins: origins(&Some(args.cors_origins.clone()).filter(|o| !o.is_empty()).or(file.cors_origins)),
            max_stream_clients: args.max_stream_clients.or(file.max_stream_clients).unwrap_or(d.max_stream_clients),
            stream_heartbeat: secs(args.stream_heartbeat_secs, file.stream_heartbeat_secs, d.stream_heartbeat),
            stream_buffer: d.stream_buffer,
            base_path: base_path(args.base_path.clone().or(file.base_path)),
            flags: file.flags,
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !valid_flag_name(&self.default_flag) {
            return Err(ConfigError::Invalid(format!("default flag {:?} is not a valid flag name", self.default_flag)));
        }
        if self.redis_url.is_some() && !self.redis_cluster_urls.is_empty() {
            return Err(ConfigError::Invalid("give either a Redis URL or Redis Cluster URLs, not both".into()));
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return Err(ConfigError::Invalid("key prefix must be non-empty and free of braces".into()));
        }
        for d in
            [self.resync_every, self.request_timeout, self.shutdown_grace, self.header_read_timeout, self.write_timeout]
        {
            if d.is_zero() || d > Duration::from_secs(3600) {
                return Err(ConfigError::Invalid("durations must be between 1 s and 1 h".into()));
            }
        }
        if self.drain > Duration::from_secs(3600) {
            return Err(ConfigError::Invalid("the drain must last at most 1 h".into()));
        }
        if self.controller_tick < Duration::from_millis(10) || self.controller_tick > Duration::from_secs(3600) {
            return Err(ConfigError::Invalid("controller tick must be between 10 ms and 1 h".into()));
        }
        if self.lease < self.controller_tick * 2 || self.lease > Duration::from_secs(3600) {
            return Err(ConfigError::Invalid("the lease must last at least two controller ticks, at most 1 h".into()));
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(ConfigError::Invalid("max connections must be between 1 and 1000000".into()));
        }
        if !(1..=1_000_000).contains(&self.max_stream_clients) {
            return Err(ConfigError::Invalid("max stream clients must be between 1 and 1000000".into()));
        }
        if self.stream_heartbeat.is_zero() || self.stream_heartbeat > Duration::from_secs(3600) {
            return Err(ConfigError::Invalid("the stream heartbeat must be between 1 s and 1 h".into()));
        }
        for origin in &self.cors_origins {
            if !valid_origin(origin) {
                return Err(ConfigError::Invalid(format!(
                    "CORS origin {origin:?} is not an origin: give scheme://host[:port], no path, no wildcard"
                )));
            }
        }
        if !self.base_path.is_empty() && !valid_base_path(&self.base_path) {
            return Err(ConfigError::Invalid(format!(
                "base path {:?} is not a path prefix: give /segment[/segment…] of letters, digits and -._~",
                self.base_path
            )));
        }
        if self.push_judge_gap > Duration::from_secs(10) {
            return Err(ConfigError::Invalid("the push judge gap must be at most 10 s".into()));
        }
        for url in &self.notify_urls {
            if !crate::domain::plan::valid_http_url(url.expose_secret()) {
                return Err(ConfigError::Invalid("notification URLs must be http:// or https:// URLs".into()));
            }
        }
        if self.dashboard_url.as_deref().is_some_and(|u| !crate::domain::plan::valid_http_url(u)) {
            return Err(ConfigError::Invalid("the dashboard URL must be an http:// or https:// URL".into()));
        }
        if self.alert_flag_label.is_empty() || self.alert_flag_label.len() > 128 {
            return Err(ConfigError::Invalid("the alert flag label must be 1–128 characters".into()));
        }
        for flag in self.cio_mapping.flags() {
            if !valid_flag_name(flag) {
                return Err(ConfigError::Invalid(format!("Customer.io mapping names an invalid flag {flag:?}")));
            }
        }
        for (name, def) in &self.flags {
            if !valid_flag_name(name) {
                return Err(ConfigError::Invalid(format!("flag name {name:?} in the config file is not valid")));
            }
            def.definition.validate().map_err(|e| ConfigError::Invalid(format!("flag {name:?}: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::error_chain;

    #[test]
    fn tokens_with_and_without_names() {
        let t = parse_tokens(&["ann:aaaaaaaa".into(), "bbbbbbbb".into()], "admin").expect("valid");
        assert_eq!((t[0].name.as_str(), t[0].secret.expose_secret()), ("ann", "aaaaaaaa"));
        assert_eq!(t[1].name, "admin2");
        assert_eq!(parse_tokens(&["cccccccc".into()], "admin").expect("valid")[0].name, "admin");
        assert!(parse_tokens(&["short".into()], "admin").is_err());
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "default_flag = \"from-file\"\nresync_secs = 7\n[flags.checkout]\nsalt = \"s\"\n")
            .expect("write");
        let args = ServeArgs { config: Some(path), resync_secs: Some(3), ..ServeArgs::default() };
        let s = Settings::load(&args).expect("valid");
        assert_eq!(s.default_flag, "from-file");
        assert_eq!(s.resync_every, Duration::from_secs(3));
        assert_eq!(s.flags["checkout"].definition.salt.as_deref(), Some("s"));
        assert!(!s.flags["checkout"].reconcile);
        assert_eq!(s.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
    }

    #[test]
    fn a_base_path_is_a_prefix_of_plain_segments_without_its_trailing_slash() {
        let load = |path: &str| Settings::load(&ServeArgs { base_path: Some(path.into()), ..ServeArgs::default() });
        assert_eq!(load("/rollout/").expect("valid").base_path, "/rollout");
        assert_eq!(load("/ops/rollout-controller").expect("valid").base_path, "/ops/rollout-controller");
        assert_eq!(load("/").expect("no prefix").base_path, "");
        for bad in ["rollout", "/a//b", "/a/../b", "/{flag}", "/a b", "/*rest", "/a?b"] {
            assert!(load(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn cluster_urls_come_comma_separated_and_exclude_a_single_url() {
        let args = ServeArgs {
            redis_cluster_urls: vec!["redis://10.0.0.1:7000".into(), " redis://10.0.0.2:7000 ".into(), String::new()],
            ..ServeArgs::default()
        };
        let s = Settings::load(&args).expect("valid");
        let urls: Vec<&str> = s.redis_cluster_urls.iter().map(|u| u.expose_secret()).collect();
        assert_eq!(urls, ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]);
        let both = ServeArgs { redis_url: Some("redis://10.0.0.3/".into()), ..args };
        assert!(matches!(Settings::load(&both), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn the_drain_defaults_to_5_s_and_may_be_0_and_the_write_timeout_may_not() {
        let s = Settings::load(&ServeArgs::default()).expect("valid");
        assert_eq!((s.drain, s.write_timeout), (Duration::from_secs(5), Duration::from_secs(10)));
        let none = ServeArgs { drain_secs: Some(0), ..ServeArgs::default() };
        assert_eq!(Settings::load(&none).expect("valid").drain, Duration::ZERO);
        let zero = ServeArgs { write_timeout_secs: Some(0), ..ServeArgs::default() };
        assert!(matches!(Settings::load(&zero), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn durations_in_the_file_and_options_and_reconciled_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        let text = "resync_secs = \"1m\"\nlease_ms = \"3s\"\ndrain_secs = 2\n\
                    [flags.checkout]\nreconcile = true\nwindow_secs = \"5m\"\n\
                    stages = [{name = \"all\", percent = 100, soak_secs = \"1h30m\"}]\n";
        std::fs::write(&path, text).expect("write");
        let args = ServeArgs { config: Some(path.clone()), ..ServeArgs::default() };
        let s = Settings::load(&args).expect("valid");
        assert_eq!(
            (s.resync_every, s.lease, s.drain),
            (Duration::from_secs(60), Duration::from_secs(3), Duration::from_secs(2))
        );
        let checkout = &s.flags["checkout"];
        assert!(checkout.reconcile);
        assert_eq!((checkout.definition.window_secs, checkout.definition.stages[0].soak_secs), (300, 5400));
        std::fs::write(&path, "[flags.checkout]\nsoak = 5\n").expect("write");
        let e = error_chain(&Settings::load(&args).expect_err("a typo is refused"));
        assert!(e.contains("unknown field `soak`"), "{e}");
        std::fs::write(&path, "drain_secs = \"soon\"\n").expect("write");
        let e = error_chain(&Settings::load(&args).expect_err("a bad duration is refused"));
        assert!(e.contains("drain_secs") && e.contains("not a duration"), "{e}");
    }

    #[test]
    fn notify_tables_name_a_format_and_events_and_unknown_events_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).expect("write");
            Settings::load(&ServeArgs { config: Some(path.clone()), ..ServeArgs::default() })
        };
        let s = load(
            "dashboard_url = \"https://r.example.com/ui/\"\n\
             [[notify]]\nurl = \"https://hooks.slack.com/services/T/B/x\"\nformat = \"slack\"\nevents = [\"rollback\", \"approval_waiting\"]\n\
             [[notify]]\nurl = \"http://127.0.0.1:9/all\"\n",
        )
        .expect("valid");
        assert_eq!(s.notify_targets.len(), 2);
        assert_eq!(s.notify_targets[0].format, Format::Slack);
        assert!(s.notify_targets[0].wants(Event::Rollback) && !s.notify_targets[0].wants(Event::Advance));
        assert_eq!(s.notify_targets[1].format, Format::Generic);
        assert!(Event::ALL.iter().all(|e| s.notify_targets[1].wants(*e)));
        assert_eq!(s.dashboard_url.as_deref(), Some("https://r.example.com/ui/"));

        let unknown = load("[[notify]]\nurl = \"http://x/\"\nevents = [\"rolback\"]\n").expect_err("typo");
        let chain = crate::util::error_chain(&unknown);
        assert!(chain.contains("unknown variant `rolback`"), "{chain}");
        assert!(load("[[notify]]\nurl = \"http://x/\"\nformat = \"msn\"\n").is_err());
        assert!(load("[[notify]]\nurl = \"http://x/\"\nevents = []\n").is_err());
        assert!(load("[[notify]]\nurl = \"ftp://x/\"\n").is_err());
        assert!(load("[[notify]]\nformat = \"slack\"\n").is_err(), "no URL");
        assert!(load("[[notify]]\nurl_env = \"ROLLOUT_TEST_NO_SUCH_VARIABLE\"\n").is_err());
    }

    #[test]
    fn an_invalid_flag_in_the_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[flags.bad]\nstages = []\n").expect("write");
        let args = ServeArgs { config: Some(path), ..ServeArgs::default() };
        assert!(matches!(Settings::load(&args), Err(ConfigError::Invalid(_))));
    }
}
