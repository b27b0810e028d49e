//! A typed HTTP client of the rollout API, for the operator commands of the CLI.
//!
//! One `reqwest::Client` with timeouts; the token goes in `Authorization: Bearer` and is never
//! shown. Every failure is sorted: the server refused the request (HTTP 4xx/5xx: exit code 1), or
//! the request could not be made at all (bad server URL, connection refused, timeout: exit code 2).

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::domain::evidence::Interval;
use crate::domain::plan::FlagDefinition;
use crate::domain::rollout::Position;
use crate::util::is_connection_refused;

/// The API's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server URL {0:?}: expected http://host:port or https://host:port")]
    InvalidServer(String),
    #[error("cannot start the HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("cannot reach {server}: connection refused")]
    Refused { server: String },
    #[error("cannot reach {server}: no answer within {secs}s")]
    Timeout { server: String, secs: u64 },
    #[error("cannot reach {server}")]
    Unreachable {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unauthorized: set --token or ROLLOUT_TOKEN")]
    Unauthorized,
    #[error("no flag named {0}")]
    FlagNotFound(String),
    /// The server refused with its own message (409: the invalid transition or version conflict).
    #[error("{message}")]
    Api { status: u16, code: String, message: String },
    #[error("the server answered HTTP {0}")]
    Status(u16),
    #[error("the server's answer is not what this client expects")]
    Decode(#[source] serde_json::Error),
}

impl ClientError {
    /// 1 when the server answered and refused; 2 when it could not be asked.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unauthorized
            | ClientError::FlagNotFound(_)
            | ClientError::Api { .. }
            | ClientError::Status(_)
            | ClientError::Decode(_) => 1,
            ClientError::InvalidServer(_)
            | ClientError::Build(_)
            | ClientError::Refused { .. }
            | ClientError::Timeout { .. }
            | ClientError::Unreachable { .. } => 2,
        }
    }
}

/// A typed answer and the JSON it came from (printed as is by `--json`).
#[derive(Debug)]
pub struct Fetched<T> {
    pub data: T,
    pub raw: Value,
}

/// Where a rollout stands (`GET /flags/{flag}`).
#[derive(Debug, Clone, Deserialize)]
pub struct FlagState {
    pub name: String,
    pub status: String,
    pub stage: String,
    pub percent: u8,
    pub version: u64,
    pub stage_entered_at: String,
    /// Absent from servers older than this client.
    #[serde(default)]
    pub in_stage_secs: Option<i64>,
    pub soak_remaining_secs: Option<i64>,
    /// Only `GET /flags/{flag}` says it.
    #[serde(default)]
    pub waiting_for_evidence: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct FlagList {
    pub flags: Vec<FlagState>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub version: u64,
    pub at: String,
    pub action: String,
    pub from: Option<Position>,
    pub to: Position,
    pub actor: String,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
pub struct History {
    pub flag: String,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GuardRow {
    pub guard: String,
    pub value: Option<f64>,
    /// The confidence sequence of a rate judged sequentially.
    #[serde(default)]
    pub interval: Option<Interval>,
    /// `None` when only a comparison with control judges the guard.
    pub threshold: Option<f64>,
    pub samples: u64,
    pub min_samples: u64,
    pub verdict: String,
    pub breaches_when: String,
    /// One line with the numbers, as audit reasons write it.
    #[serde(default)]
    pub summary: String,
}

/// Guard readings of the current stage (`GET /flags/{flag}/health`).
#[derive(Debug, Deserialize)]
pub struct HealthReport {
    pub flag: String,
    pub status: String,
    pub stage: String,
    pub since: String,
    pub window_secs: u64,
    pub verdict: String,
    pub guards: Vec<GuardRow>,
    /// The soak is over and these guards are still inconclusive.
    #[serde(default)]
    pub waiting_for_evidence: Vec<String>,
}

/// `GET /flags/{flag}/explain?user=ID`.
#[derive(Debug, Deserialize)]
pub struct Explanation {
    pub flag: String,
    pub user: String,
    pub salt: Option<String>,
    pub hashed_key: String,
    pub bucket: u8,
    pub percent: u8,
    pub stage: String,
    pub status: String,
    pub internal_user: bool,
    pub enabled: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NotifyProbe {
    pub url_prefix: String,
    pub reachable: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FlagCheck {
    pub name: String,
    pub valid: bool,
    pub problem: Option<String>,
}

/// `GET /admin/status`: what `rollout doctor` audits.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminStatus {
    pub store: String,
    pub store_ping_ms: Option<f64>,
    #[serde(default)]
    pub store_error: Option<String>,
    pub leader: Option<String>,
    pub this_replica: String,
    pub token_generated: bool,
    pub admin_tokens: usize,
    pub read_tokens: usize,
    pub metrics_tokens: usize,
    #[serde(default)]
    pub alert_tokens: usize,
    #[serde(default)]
    pub cio_signing_keys: Vec<String>,
    pub notify_urls: Vec<NotifyProbe>,
    pub server_time_ms: i64,
    pub store_time_ms: Option<i64>,
    pub flags: Vec<FlagCheck>,
}

/// A flag's definition and the version it was read at (`GET /flags`, for `apply` and `export`).
#[derive(Debug, Clone, Deserialize)]
pub struct StoredFlag {
    pub name: String,
    pub version: u64,
    pub definition: FlagDefinition,
}

#[derive(Debug, Deserialize)]
pub struct StoredFlags {
    pub flags: Vec<StoredFlag>,
}

/// A client of one server.
pub struct Client {
    http: reqwest::Client,
    /// For the change stream: no overall timeout (the stream lasts), the same connect timeout.
    stream_http: reqwest::Client,
    base: Url,
    /// The server as the operator wrote it, for messages.
    server: String,
    token: Option<SecretString>,
    timeout: Duration,
}

impl Client {
    /// A client of `server` (`http(s)://host:port`, optionally with a path prefix).
    pub fn new(server: &str, token: Option<SecretString>, timeout: Duration) -> Result<Self, ClientError> {
        let invalid = || ClientError::InvalidServer(server.to_owned());
        let base = Url::parse(server).map_err(|_| invalid())?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() || base.cannot_be_a_base() {
            return Err(invalid());
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("rollout-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Build)?;
        let stream_http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("rollout-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Build)?;
        Ok(Self { http, stream_http, base, server: server.trim_end_matches('/').to_owned(), token, timeout })
    }

    /// The server as given.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The base URL with `segments` appended, each percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.authorized(self.http.request(method, self.url(segments)))
    }

    fn authorized(&self, req: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(token) => req.bearer_auth(token.expose_secret()),
            None => req,
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        let server = self.server.clone();
        if e.is_timeout() {
            ClientError::Timeout { server, secs: self.timeout.as_secs() }
        } else if is_connection_refused(&e) {
            ClientError::Refused { server }
        } else {
            ClientError::Unreachable { server, source: e }
        }
    }

    /// Sends; any status comes back with the body as text.
    async fn exchange(&self, req: RequestBuilder) -> Result<(u16, String), ClientError> {
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| self.unreachable(e))?;
        Ok((status, body))
    }

    /// Sends; a success comes back as its body, anything else as the refusal it is.
    async fn call(&self, req: RequestBuilder, flag: Option<&str>) -> Result<String, ClientError> {
        let (status, body) = self.exchange(req).await?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let error = serde_json::from_str::<ErrorBody>(&body).ok();
        Err(match (status, error, flag) {
            (401, _, _) => ClientError::Unauthorized,
            (404, Some(e), Some(flag)) if e.error == "flag_not_found" => ClientError::FlagNotFound(flag.to_owned()),
            (_, Some(e), _) => ClientError::Api { status, code: e.error, message: e.message },
            (_, None, _) => ClientError::Status(status),
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        req: RequestBuilder,
        flag: Option<&str>,
    ) -> Result<Fetched<T>, ClientError> {
        let body = self.call(req, flag).await?;
        let raw: Value = serde_json::from_str(&body).map_err(ClientError::Decode)?;
        let data = T::deserialize(&raw).map_err(ClientError::Decode)?;
        Ok(Fetched { data, raw })
    }

    /// `GET` a path without judging the status: `(status, JSON body or Null)`.
    pub async fn probe(&self, path: &str) -> Result<(u16, Value), ClientError> {
        let (status, body) = self.exchange(self.request(Method::GET, &[path])).await?;
        Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    pub async fn flags(&self) -> Result<Fetched<FlagList>, ClientError> {
        self.json(self.request(Method::GET, &["flags"]), None).await
    }

    pub async fn flag(&self, flag: &str) -> Result<Fetched<FlagState>, ClientError> {
        self.json(self.request(Method::GET, &["flags", flag]), Some(flag)).await
    }

    /// `start`, `advance`, `pause`, `resume` or `rollback`.
    pub async fn transition(
        &self,
        flag: &str,
        command: &str,
        reason: Option<&str>,
        expected_version: Option<u64>,
    ) -> Result<Fetched<FlagState>, ClientError> {
        let body = command_body(reason, expected_version);
        let req = self.request(Method::POST, &["flags", flag, command]).json(&body);
        self.json(req, Some(flag)).await
    }

    /// `POST /flags/{flag}/start`, now or `at` (RFC 3339).
    pub async fn start(
        &self,
        flag: &str,
        reason: Option<&str>,
        expected_version: Option<u64>,
        at: Option<&str>,
    ) -> Result<Fetched<FlagState>, ClientError> {
        let mut body = command_body(reason, expected_version);
        if let Some(at) = at {
            body.insert("at".into(), at.into());
        }
        let req = self.request(Method::POST, &["flags", flag, "start"]).json(&body);
        self.json(req, Some(flag)).await
    }

    /// `POST /flags/{flag}/approve`.
    pub async fn approve(
        &self,
        flag: &str,
        stage: &str,
        reason: Option<&str>,
    ) -> Result<Fetched<FlagState>, ClientError> {
        let body = serde_json::json!({"stage": stage, "reason": reason});
        let body = match body {
            Value::Object(mut map) if reason.is_none() => {
                map.remove("reason");
                Value::Object(map)
            }
            other => other,
        };
        let req = self.request(Method::POST, &["flags", flag, "approve"]).json(&body);
        self.json(req, Some(flag)).await
    }

    /// `POST /rollback-all`, `/freeze` or `/unfreeze` with a reason; the answer as JSON.
    pub async fn post_reason(&self, route: &str, reason: &str) -> Result<Fetched<Value>, ClientError> {
        let req = self.request(Method::POST, &[route]).json(&serde_json::json!({"reason": reason}));
        self.json(req, None).await
    }

    pub async fn history(&self, flag: &str, limit: Option<u64>) -> Result<Fetched<History>, ClientError> {
        let mut req = self.request(Method::GET, &["flags", flag, "history"]);
        if let Some(limit) = limit {
            req = req.query(&[("limit", limit)]);
        }
        self.json(req, Some(flag)).await
    }

    pub async fn health(&self, flag: &str) -> Result<Fetched<HealthReport>, ClientError> {
        self.json(self.request(Method::GET, &["flags", flag, "health"]), Some(flag)).await
    }

    pub async fn explain(&self, flag: &str, user: &str) -> Result<Fetched<Explanation>, ClientError> {
        let req = self.request(Method::GET, &["flags", flag, "explain"]).query(&[("user", user)]);
        self.json(req, Some(flag)).await
    }

    /// The post-launch review as JSON.
    pub async fn report_json(&self, flag: &str) -> Result<Value, ClientError> {
        self.json::<Value>(self.request(Method::GET, &["flags", flag, "report"]), Some(flag)).await.map(|f| f.data)
    }

    /// The post-launch review as Markdown.
    pub async fn report_markdown(&self, flag: &str) -> Result<String, ClientError> {
        let req = self.request(Method::GET, &["flags", flag, "report"]).query(&[("format", "md")]);
        self.call(req, Some(flag)).await
    }

    /// Every flag's definition and version.
    pub async fn definitions(&self) -> Result<StoredFlags, ClientError> {
        self.json(self.request(Method::GET, &["flags"]), None).await.map(|f: Fetched<StoredFlags>| f.data)
    }

    /// One flag's definition and version.
    pub async fn definition(&self, flag: &str) -> Result<StoredFlag, ClientError> {
        self.json(self.request(Method::GET, &["flags", flag]), Some(flag)).await.map(|f: Fetched<StoredFlag>| f.data)
    }

    /// `PUT /flags/{flag}`, refused (409) unless the flag is at `expected_version` (0: absent).
    pub async fn put_definition(
        &self,
        flag: &str,
        definition: &FlagDefinition,
        expected_version: u64,
    ) -> Result<Fetched<FlagState>, ClientError> {
        let req = self
            .request(Method::PUT, &["flags", flag])
            .query(&[("expected_version", expected_version)])
            .json(definition);
        self.json(req, Some(flag)).await
    }

    /// `DELETE /flags/{flag}` with a reason for the deletion audit.
    pub async fn delete(&self, flag: &str, reason: Option<&str>) -> Result<(), ClientError> {
        let mut req = self.request(Method::DELETE, &["flags", flag]);
        if let Some(reason) = reason {
            req = req.query(&[("reason", reason)]);
        }
        self.call(req, Some(flag)).await.map(|_| ())
    }

    /// Opens `GET /stream` (Server-Sent Events), resuming after `last_event_id` when given.
    pub async fn stream(&self, last_event_id: Option<&str>) -> Result<reqwest::Response, ClientError> {
        let mut req = self.authorized(self.stream_http.get(self.url(&["stream"])));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let body = resp.text().await.map_err(|e| self.unreachable(e))?;
        Err(match serde_json::from_str::<ErrorBody>(&body) {
            _ if status == 401 => ClientError::Unauthorized,
            Ok(e) => ClientError::Api { status, code: e.error, message: e.message },
            Err(_) => ClientError::Status(status),
        })
    }

    pub async fn admin_status(&self) -> Result<Fetched<AdminStatus>, ClientError> {
        self.json(self.request(Method::GET, &["admin", "status"]), None).await
    }
}

/// A command's body: `{"reason", "expected_version"}`, each only when given.
fn command_body(reason: Option<&str>, expected_version: Option<u64>) -> serde_json::Map<String, serde_json::Value> {
    let mut body = serde_json::Map::new();
    if let Some(reason) = reason {
        body.insert("reason".into(), reason.into());
    }
    if let Some(version) = expected_version {
        body.insert("expected_version".into(), version.into());
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_appended_to_the_base_and_encoded() {
        let c = Client::new("http://h:1/prefix/", None, Duration::from_secs(1)).expect("valid");
        assert_eq!(c.url(&["flags", "a b/c"]).as_str(), "http://h:1/prefix/flags/a%20b%2Fc");
        let c = Client::new("http://h:1", None, Duration::from_secs(1)).expect("valid");
        assert_eq!(c.url(&["healthz"]).as_str(), "http://h:1/healthz");
        assert_eq!(c.server(), "http://h:1");
    }

    #[test]
    fn only_http_urls_are_servers() {
        for bad in ["127.0.0.1:8080", "ftp://h", "http://", "mailto:x@y", ""] {
            assert!(
                matches!(Client::new(bad, None, Duration::from_secs(1)), Err(ClientError::InvalidServer(_))),
                "{bad}"
            );
        }
    }
}
