//! Customer.io reporting webhooks: signature verification and email events → guard counters.
//!
//! Signature: `X-CIO-Signature` = lowercase hex of HMAC-SHA256(signing key,
//! `"v0:" + X-CIO-Timestamp + ":" + raw body`), compared in constant time against every configured
//! key (so keys can be rotated), and the timestamp must be within 5 minutes of now.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::domain::guards::MetricSample;

/// Timestamps further than this from now are replays (or broken clocks).
pub const MAX_SKEW_SECS: u64 = 300;
/// Longest event id accepted, in bytes: ids are de-duplication keys, compared whole.
pub const MAX_EVENT_ID_LEN: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing X-CIO-Signature or X-CIO-Timestamp header")]
    MissingHeaders,
    #[error("X-CIO-Timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("X-CIO-Timestamp is more than 5 minutes from now")]
    StaleTimestamp,
    #[error("the signature matches no configured signing key")]
    BadSignature,
}

impl Rejection {
    pub fn code(self) -> &'static str {
        match self {
            Rejection::MissingHeaders => "missing_signature",
            Rejection::BadTimestamp | Rejection::StaleTimestamp => "stale_timestamp",
            Rejection::BadSignature => "invalid_signature",
        }
    }
}

/// Lowercase hex HMAC-SHA256 of `v0:{timestamp}:{body}`.
pub fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    hex::encode(mac(key, timestamp, body))
}

fn mac(key: &[u8], timestamp: &str, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Checks the timestamp window, then the signature against each key in constant time.
pub fn verify(
    keys: &[Vec<u8>],
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now_ms: i64,
) -> Result<(), Rejection> {
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else { return Err(Rejection::MissingHeaders) };
    let ts: i64 = timestamp.trim().parse().map_err(|_| Rejection::BadTimestamp)?;
    // `abs_diff`: the distance of any two i64 fits a u64, so no timestamp can overflow the check.
    if (now_ms / 1000).abs_diff(ts) > MAX_SKEW_SECS {
        return Err(Rejection::StaleTimestamp);
    }
    let presented = hex::decode(signature.trim()).map_err(|_| Rejection::BadSignature)?;
    let mut matched = false;
    for key in keys {
        matched |= bool::from(mac(key, timestamp.trim(), body).ct_eq(&presented));
    }
    if matched { Ok(()) } else { Err(Rejection::BadSignature) }
}

/// One reporting-webhook event (only the fields the guards use).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub event_id: Option<String>,
    pub object_type: Option<String>,
    pub metric: Option<String>,
    #[serde(default)]
    pub data: BTreeMap<String, serde_json::Value>,
}

/// Which flag a message's events count for: by campaign, broadcast or transactional message id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagMapping {
    #[serde(default)]
    pub campaigns: BTreeMap<String, String>,
    #[serde(default)]
    pub broadcasts: BTreeMap<String, String>,
    #[serde(default)]
    pub transactional_messages: BTreeMap<String, String>,
    /// Events of unmapped messages count for this flag.
    #[serde(default)]
    pub default_flag: Option<String>,
}

fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl FlagMapping {
    pub fn flag_for(&self, event: &Event) -> Option<&str> {
        for (field, map) in [
            ("campaign_id", &self.campaigns),
            ("broadcast_id", &self.broadcasts),
            ("transactional_message_id", &self.transactional_messages),
        ] {
            if let Some(id) = event.data.get(field).and_then(id_text)
                && let Some(flag) = map.get(&id)
            {
                return Some(flag.as_str());
            }
        }
        self.default_flag.as_deref()
    }

    pub fn flags(&self) -> impl Iterator<Item = &String> {
        self.campaigns
            .values()
            .chain(self.broadcasts.values())
            .chain(self.transactional_messages.values())
            .chain(self.default_flag.iter())
    }
}

impl Event {
    /// The de-duplication key of this event: its whole id (`None` when it has none), or why the
    /// id is refused (longer than [`MAX_EVENT_ID_LEN`] bytes).
    pub fn dedup_key(&self) -> Result<Option<String>, String> {
        match self.event_id.as_deref() {
            None | Some("") => Ok(None),
            Some(id) if id.len() > MAX_EVENT_ID_LEN => {
                Err(format!("event_id: at most {MAX_EVENT_ID_LEN} bytes, got {}", id.len()))
            }
            Some(id) => Ok(Some(format!("cio:{id}"))),
        }
    }

    /// The guard counters an email event adds, or `None` for events the guards ignore.
    ///
    /// `sent` and `delivered` count as such; `bounced` is a sent message that bounced; `spammed`
    /// is a complaint; `failed` and `dropped` are attempts that never got delivered (they count as
    /// sent, so they lower the delivery rate).
    pub fn sample(&self) -> Option<MetricSample> {
        if self.object_type.as_deref() != Some("email") {
            return None;
        }
        let mut s = MetricSample::default();
        match self.metric.as_deref()? {
            "sent" => s.sent = 1,
            "delivered" => s.delivered = 1,
            "bounced" => s.bounced = 1,
            "spammed" => s.complaints = 1,
            "failed" | "dropped" => s.sent = 1,
            _ => return None,
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"event_id":"01E4C4CT6YDC7Y5M7FE1GWWPQJ"}"#;
    const VECTOR: &str = "2c8ae587619a74e1285c5ba12760784e6908c947ddd97e5e0284e3d8e06fdaf9";

    #[test]
    fn matches_the_published_test_vector() {
        assert_eq!(sign(b"whsec_test", "1700000000", BODY), VECTOR);
    }

    #[test]
    fn verification_checks_every_key_the_signature_and_the_clock() {
        let now = 1_700_000_000_000;
        let keys = vec![b"old-key".to_vec(), b"whsec_test".to_vec()];
        assert_eq!(verify(&keys, Some(VECTOR), Some("1700000000"), BODY, now), Ok(()));
        assert_eq!(verify(&keys, Some(VECTOR), Some("1700000000"), BODY, now + 299_000), Ok(()));
        assert_eq!(
            verify(&keys, Some(VECTOR), Some("1700000000"), BODY, now + 301_000),
            Err(Rejection::StaleTimestamp)
        );
        assert_eq!(
            verify(&keys, Some(VECTOR), Some("1700000000"), BODY, now - 301_000),
            Err(Rejection::StaleTimestamp)
        );
        assert_eq!(verify(&keys[..1], Some(VECTOR), Some("1700000000"), BODY, now), Err(Rejection::BadSignature));
        assert_eq!(verify(&keys, Some(VECTOR), Some("1700000000"), b"{}", now), Err(Rejection::BadSignature));
        assert_eq!(verify(&keys, Some("zz"), Some("1700000000"), BODY, now), Err(Rejection::BadSignature));
        assert_eq!(verify(&keys, None, Some("1700000000"), BODY, now), Err(Rejection::MissingHeaders));
        assert_eq!(verify(&keys, Some(VECTOR), Some("soon"), BODY, now), Err(Rejection::BadTimestamp));
    }

    #[test]
    fn timestamps_at_the_ends_of_i64_are_stale_not_an_overflow() {
        let now = 1_700_000_000_000;
        let keys = vec![b"k".to_vec()];
        for ts in [now / 1000 + i64::MIN, i64::MIN, i64::MAX, now / 1000 - i64::MAX] {
            let ts = ts.to_string();
            let signature = sign(b"k", &ts, BODY);
            assert_eq!(verify(&keys, Some(&signature), Some(&ts), BODY, now), Err(Rejection::StaleTimestamp), "{ts}");
        }
    }

    #[test]
    fn event_ids_are_keys_whole_and_over_long_ones_are_refused() {
        let event =
            |id: &str| Event { event_id: Some(id.to_owned()), object_type: None, metric: None, data: BTreeMap::new() };
        let longest = "x".repeat(MAX_EVENT_ID_LEN);
        assert_eq!(event(&longest).dedup_key(), Ok(Some(format!("cio:{longest}"))));
        assert!(event(&format!("{longest}a")).dedup_key().is_err());
        assert_eq!(event("").dedup_key(), Ok(None));
        assert_eq!(Event { event_id: None, ..event("") }.dedup_key(), Ok(None));
    }

    #[test]
    fn email_events_map_to_counters_and_flags() {
        let e: Event = serde_json::from_str(
            r#"{"event_id":"e1","object_type":"email","metric":"bounced","timestamp":1,"data":{"campaign_id":42,"delivery_id":"d"}}"#,
        )
        .expect("parses");
        assert_eq!(e.sample().map(|s| (s.bounced, s.sent)), Some((1, 0)));
        let mapping = FlagMapping {
            campaigns: [("42".to_owned(), "checkout".to_owned())].into(),
            default_flag: Some("fallback".into()),
            ..FlagMapping::default()
        };
        assert_eq!(mapping.flag_for(&e), Some("checkout"));
        let other: Event =
            serde_json::from_str(r#"{"object_type":"email","metric":"spammed","data":{"broadcast_id":"7"}}"#)
                .expect("parses");
        assert_eq!(mapping.flag_for(&other), Some("fallback"));
        assert_eq!(other.sample().map(|s| s.complaints), Some(1));
        let push: Event = serde_json::from_str(r#"{"object_type":"push","metric":"sent"}"#).expect("parses");
        assert_eq!(push.sample(), None);
        let unknown: Event = serde_json::from_str(r#"{"object_type":"email","metric":"opened"}"#).expect("parses");
        assert_eq!(unknown.sample(), None);
    }
}
