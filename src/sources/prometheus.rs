//! PromQL guards: instant queries against a Prometheus server's `/api/v1/query`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::guards::Guard;
use crate::domain::plan::PrometheusGuards;
use crate::domain::secs_to_ms;
use crate::util::lock;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("the query returned no series")]
    Empty,
    #[error("the query returned {0} series; guards need a scalar or exactly one")]
    TooMany(usize),
    #[error("the query returned {0}, not a finite number")]
    NotANumber(String),
    #[error("Prometheus answered HTTP {0}")]
    Http(u16),
    #[error("Prometheus did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach Prometheus")]
    Unreachable,
    #[error("unexpected answer: {0}")]
    Malformed(String),
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Scalar((f64, String)),
    Vector(Vec<Sample>),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct Sample {
    value: (f64, String),
}

/// The number an `/api/v1/query` answer holds: a scalar or a one-element vector, finite.
pub fn parse_answer(body: &[u8]) -> Result<f64, QueryError> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| QueryError::Malformed(e.to_string()))?;
    if answer.status != "success" {
        return Err(QueryError::Malformed(answer.error.unwrap_or_else(|| answer.status.clone())));
    }
    let text = match answer.data {
        Some(Data::Scalar((_, v))) => v,
        Some(Data::Vector(samples)) => match samples.as_slice() {
            [] => return Err(QueryError::Empty),
            [one] => one.value.1.clone(),
            many => return Err(QueryError::TooMany(many.len())),
        },
        Some(Data::Matrix(_)) => return Err(QueryError::Malformed("a range vector; use an instant query".into())),
        Some(Data::String(_)) | None => return Err(QueryError::Malformed("no numeric result".into())),
    };
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(QueryError::NotANumber(text)),
    }
}

/// Runs one instant query.
pub async fn query(client: &reqwest::Client, base: &str, promql: &str, timeout: Duration) -> Result<f64, QueryError> {
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let sent = client.get(url).query(&[("query", promql)]).timeout(timeout).send().await;
    let response = match sent {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Err(QueryError::Timeout(timeout)),
        Err(_) => return Err(QueryError::Unreachable),
    };
    let status = response.status();
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) if e.is_timeout() => return Err(QueryError::Timeout(timeout)),
        Err(_) => return Err(QueryError::Unreachable),
    };
    if !status.is_success() {
        return Err(QueryError::Http(status.as_u16()));
    }
    parse_answer(&body)
}

/// Runs each flag's queries when their interval has passed (per flag, by the injected clock).
pub struct Puller {
    client: reqwest::Client,
    last_run: Mutex<HashMap<String, i64>>,
}

impl Puller {
    /// Fails when the HTTP client cannot be built (it would lose its connect timeout).
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::limited(2))
            .build()?;
        Ok(Self { client, last_run: Mutex::new(HashMap::new()) })
    }

    /// Queries every guard of `config` if `flag`'s interval has passed; returns the readings.
    pub async fn pull_if_due(
        &self,
        flag: &str,
        config: &PrometheusGuards,
        now_ms: i64,
    ) -> Vec<(Guard, Result<f64, QueryError>)> {
        {
            let mut last = lock(&self.last_run);
            if last.get(flag).is_some_and(|at| now_ms - at < secs_to_ms(config.interval_secs)) {
                return Vec::new();
            }
            last.insert(flag.to_owned(), now_ms);
        }
        let timeout = Duration::from_secs(config.interval_secs.clamp(1, 5));
        let queries = config
            .queries
            .iter()
            .map(|(guard, promql)| async move { (*guard, query(&self.client, &config.url, promql, timeout).await) });
        futures::future::join_all(queries).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_and_single_vectors_are_numbers() {
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"0.25"]}}"#;
        assert_eq!(parse_answer(scalar), Ok(0.25));
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"x"},"value":[1700000000,"3"]}]}}"#;
        assert_eq!(parse_answer(vector), Ok(3.0));
    }

    #[test]
    fn empty_many_nan_and_inf_are_not_readings() {
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_answer(empty), Err(QueryError::Empty));
        let two = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]},{"metric":{},"value":[1,"2"]}]}}"#;
        assert_eq!(parse_answer(two), Err(QueryError::TooMany(2)));
        for v in ["NaN", "+Inf", "-Inf", "x"] {
            let body = format!(r#"{{"status":"success","data":{{"resultType":"scalar","result":[1,"{v}"]}}}}"#);
            assert_eq!(parse_answer(body.as_bytes()), Err(QueryError::NotANumber(v.into())));
        }
        let failed = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(parse_answer(failed), Err(QueryError::Malformed("parse error".into())));
        assert!(matches!(parse_answer(b"<html>"), Err(QueryError::Malformed(_))));
    }
}
