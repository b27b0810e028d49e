//! Alertmanager webhook payloads (version 4): which alerts fire for which flag.

use std::collections::BTreeMap;

use serde::Deserialize;

/// An alert's (or a whole payload's) status: Alertmanager sends no other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// The webhook body Alertmanager POSTs to a `webhook_configs` receiver.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct Payload {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub status: Option<AlertStatus>,
    #[serde(default)]
    pub receiver: Option<String>,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct Alert {
    pub status: AlertStatus,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, rename = "startsAt")]
    pub starts_at: Option<String>,
    #[serde(default, rename = "endsAt")]
    pub ends_at: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// Most alerts accepted in one payload.
pub const MAX_ALERTS: usize = 1000;

impl Alert {
    pub fn is_firing(&self) -> bool {
        self.status == AlertStatus::Firing
    }

    /// The flag this alert names: the configured label, or `rollout_flag`.
    pub fn flag<'a>(&'a self, label: &str) -> Option<&'a str> {
        self.labels.get(label).or_else(|| self.labels.get("rollout_flag")).map(String::as_str).filter(|f| !f.is_empty())
    }

    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("unnamed", String::as_str)
    }

    /// `summary`, else `description`, else nothing.
    pub fn summary(&self) -> &str {
        self.annotations.get("summary").or_else(|| self.annotations.get("description")).map_or("", String::as_str)
    }

    /// The audit reason: `alert:<alertname>: <summary>`.
    pub fn reason(&self) -> String {
        let summary: String = self.summary().chars().take(500).collect();
        if summary.is_empty() { format!("alert:{}", self.name()) } else { format!("alert:{}: {summary}", self.name()) }
    }

    /// Identity of one firing episode: the same alert re-sent by Alertmanager has the same key;
    /// once resolved, a new firing starts a new episode (a new `startsAt`).
    pub fn episode(&self) -> String {
        let id = match &self.fingerprint {
            Some(f) if !f.is_empty() => f.clone(),
            _ => self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        };
        format!("{id}@{}", self.starts_at.as_deref().unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_alertmanager_payload_parses() {
        let body = r#"{"receiver":"rollout","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"HighErrorRate","flag":"checkout","severity":"page"},"annotations":{"summary":"5xx above 2%"},"startsAt":"2026-11-23T10:00:00.000Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom/graph","fingerprint":"a1b2c3"}],"groupLabels":{"alertname":"HighErrorRate"},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am","version":"4","groupKey":"{}:{}","truncatedAlerts":0}"#;
        let p: Payload = serde_json::from_str(body).expect("parses");
        let a = &p.alerts[0];
        assert!(a.is_firing());
        assert_eq!(a.flag("flag"), Some("checkout"));
        assert_eq!(a.reason(), "alert:HighErrorRate: 5xx above 2%");
        assert_eq!(a.episode(), "a1b2c3@2026-11-23T10:00:00.000Z");
    }

    #[test]
    fn rollout_flag_is_accepted_and_the_label_is_configurable() {
        let a: Alert =
            serde_json::from_str(r#"{"status":"firing","labels":{"rollout_flag":"x","feature":"y"}}"#).expect("parses");
        assert_eq!(a.flag("flag"), Some("x"));
        assert_eq!(a.flag("feature"), Some("y"));
        assert_eq!(a.reason(), "alert:unnamed");
    }

    #[test]
    fn a_status_other_than_firing_or_resolved_is_refused() {
        let resolved: Alert = serde_json::from_str(r#"{"status":"resolved"}"#).expect("parses");
        assert!(!resolved.is_firing());
        for status in ["pending", "FIRING", "", "inactive"] {
            let body = format!(r#"{{"status":"{status}"}}"#);
            assert!(serde_json::from_str::<Alert>(&body).is_err(), "{status}");
        }
        assert!(serde_json::from_str::<Payload>(r#"{"status":"suppressed","alerts":[]}"#).is_err());
    }
}
