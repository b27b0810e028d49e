//! Property-based fuzzing of every body parser through the live router: arbitrary bytes and
//! arbitrary JSON never panic and never yield a 5xx, and no JSON array is read as an object.

use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::helpers::{ADMIN, TestApp};

/// One app and runtime for every case (the memory store: no Redis needed to parse).
fn app() -> &'static (tokio::runtime::Runtime, TestApp) {
    static APP: OnceLock<(tokio::runtime::Runtime, TestApp)> = OnceLock::new();
    APP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let app = rt.block_on(async {
            let app = TestApp::in_memory()
                .settings(|s| {
                    s.cio_signing_keys = vec!["whsec_fuzz".to_owned().into()];
                    s.cio_mapping.default_flag = Some("f".into());
                })
                .spawn()
                .await;
            app.create_flag("f", json!({})).await;
            app.must("f", "start").await;
            app
        });
        (rt, app)
    })
}

/// The routes that parse a body, with the headers they need to get that far.
const TARGETS: [(&str, &str); 8] = [
    ("PUT", "/flags/fuzzed"),
    ("POST", "/flags/f/metrics"),
    ("POST", "/flags/f/pause"),
    ("POST", "/alerts/alertmanager"),
    ("POST", "/webhooks/customerio"),
    ("POST", "/ofrep/v1/evaluate/flags/f"),
    ("POST", "/ofrep/v1/evaluate/flags"),
    ("POST", "/flags/f/resume"),
];

fn send(target: usize, body: Vec<u8>, content_type: Option<&str>) -> u16 {
    let (rt, app) = app();
    let (method, path) = TARGETS[target % TARGETS.len()];
    rt.block_on(async {
        let mut req =
            app.http.request(method.parse().expect("method"), app.url(path)).bearer_auth(ADMIN).body(body.clone());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if path == "/webhooks/customerio" {
            // Correctly signed, so the parser behind the signature check is reached.
            let ts = (crate::helpers::T0 / 1000).to_string();
            let sig = rollout_controller::sources::customerio::sign(b"whsec_fuzz", &ts, &body);
            req = req.header("x-cio-timestamp", ts).header("x-cio-signature", sig);
        }
        req.send().await.expect("the service answers").status().as_u16()
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        prop_oneof![
            Just("requests"),
            Just("errors"),
            Just("sent"),
            Just("stages"),
            Just("percent"),
            Just("context"),
            Just("targetingKey"),
            Just("alerts"),
            Just("status"),
            Just("labels"),
            Just("firing"),
            Just("email"),
            Just("metric"),
            Just("bounced"),
            Just("object_type"),
            Just("thresholds"),
            Just("error_rate"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        let keys = prop_oneof![
            Just("requests".to_owned()),
            Just("errors".to_owned()),
            Just("stages".to_owned()),
            Just("name".to_owned()),
            Just("percent".to_owned()),
            Just("soak_secs".to_owned()),
            Just("context".to_owned()),
            Just("targetingKey".to_owned()),
            Just("alerts".to_owned()),
            Just("status".to_owned()),
            Just("labels".to_owned()),
            Just("flag".to_owned()),
            Just("metric".to_owned()),
            Just("object_type".to_owned()),
            Just("event_id".to_owned()),
            Just("data".to_owned()),
            Just("thresholds".to_owned()),
            Just("reason".to_owned()),
            Just("expected_version".to_owned()),
            Just("p99_latency_ms".to_owned()),
            Just("internal_users".to_owned()),
            Just("salt".to_owned()),
            ".{0,12}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_yield_a_5xx(target in 0usize..8, body in prop::collection::vec(any::<u8>(), 0..600)) {
        let status = send(target, body, Some("application/json"));
        prop_assert!(status < 500, "{:?} answered {status}", TARGETS[target]);
    }

    #[test]
    fn arbitrary_json_never_yields_a_5xx(target in 0usize..8, value in json_value()) {
        let status = send(target, serde_json::to_vec(&value).expect("json"), Some("application/json"));
        prop_assert!(status < 500, "{:?} answered {status} to {value}", TARGETS[target]);
    }

    #[test]
    fn an_array_is_never_taken_for_an_object(target in 0usize..8, items in prop::collection::vec(json_value(), 0..6)) {
        let body = Value::Array(items);
        let status = send(target, serde_json::to_vec(&body).expect("json"), Some("application/json"));
        // OFREP answers PARSE_ERROR (400) in its own format; our routes 422 `invalid_body`.
        let refused = if TARGETS[target].1.starts_with("/ofrep/") { 400 } else { 422 };
        prop_assert_eq!(status, refused, "{:?} answered {} to {}", TARGETS[target], status, body);
    }

    #[test]
    fn odd_content_types_never_yield_a_5xx(target in 0usize..8, ct in "[ -~]{0,40}", body in ".{0,80}") {
        let status = send(target, body.into_bytes(), Some(&ct));
        prop_assert!(status < 500);
    }
}
