//! The OpenAPI document covers every route the code registers.

use std::collections::BTreeSet;

use crate::helpers::TestApp;

/// `(METHOD, /path)` of every `.route("…", method(…))` in src/http/*.rs.
fn routes_in_code() -> BTreeSet<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("src/http") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("source");
        for chunk in text.split(".route(").skip(1) {
            let Some(rest) = chunk.trim_start().strip_prefix('"') else { continue };
            let Some((route, tail)) = rest.split_once('"') else { continue };
            // The methods of this route: up to the next `.route(` (or the end of the router).
            let tail = tail.split(".route(").next().unwrap_or("");
            let tail = tail.split("\n}").next().unwrap_or(tail);
            for method in ["get", "post", "put", "delete", "patch"] {
                let call = format!("{method}(");
                if tail.match_indices(&call).any(|(i, _)| {
                    i == 0 || !tail.as_bytes()[i - 1].is_ascii_alphanumeric() && tail.as_bytes()[i - 1] != b'_'
                }) {
                    routes.insert((method.to_uppercase(), route.to_owned()));
                }
            }
        }
    }
    routes
}

#[tokio::test]
async fn every_route_in_the_code_is_in_the_openapi_document_and_nothing_else_is() {
    let app = TestApp::in_memory().spawn().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    let doc = r.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let in_code = routes_in_code();
    assert!(in_code.len() >= 30, "the route scan found only {in_code:?}");
    let missing: Vec<_> = in_code.difference(&documented).collect();
    assert!(missing.is_empty(), "routes missing from /openapi.json: {missing:?}");
    let extra: Vec<_> = documented.difference(&in_code).collect();
    assert!(extra.is_empty(), "documented routes that do not exist: {extra:?}");

    // Every operation documents its responses; protected ones name their security scheme.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}: no responses");
        }
    }
    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    for scheme in ["bearer", "api_key", "cio_signature"] {
        assert!(schemes.contains_key(scheme), "missing security scheme {scheme}");
    }
    assert!(doc["paths"]["/flags/{flag}/rollback"]["post"]["security"].is_array());
    for schema in ["ErrorBody", "FlagDefinition", "MetricSample", "EvaluationBody", "Success", "Failure"] {
        assert!(doc["components"]["schemas"].get(schema).is_some(), "missing schema {schema}");
    }
}

#[tokio::test]
async fn the_document_says_seconds_fields_take_an_integer_or_a_duration_and_put_takes_expected_version() {
    let app = TestApp::in_memory().spawn().await;
    let doc = app.get("/openapi.json").await.body;
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("Stage", "soak_secs"),
        ("FlagDefinition", "window_secs"),
        ("FlagDefinition", "review_after_secs"),
        ("CheckDefinition", "interval_secs"),
        ("CheckDefinition", "timeout_secs"),
        ("CheckDefinition", "offset_secs"),
        ("PrometheusGuards", "interval_secs"),
    ] {
        let one_of = &schemas[schema]["properties"][field]["oneOf"];
        let types: Vec<&str> = one_of
            .as_array()
            .unwrap_or_else(|| panic!("{schema}.{field}: {one_of}"))
            .iter()
            .filter_map(|s| s["type"].as_str())
            .collect();
        assert_eq!(types, ["integer", "string"], "{schema}.{field}");
        assert_eq!(one_of[1]["pattern"], "^([0-9]+|([0-9]+(s|m|h|d))+)$", "{schema}.{field}");
    }
    let params = doc["paths"]["/flags/{flag}"]["put"]["parameters"].as_array().expect("parameters");
    assert!(params.iter().any(|p| p["name"] == "expected_version" && p["in"] == "query"), "{params:?}");
}
