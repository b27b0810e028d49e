//! Every route and every error code of the HTTP API, against a real Redis.

use serde_json::json;

use rollout_controller::config::NamedToken;

use crate::helpers::{ADMIN, RedisServer, TestApp};

#[tokio::test]
async fn a_flag_is_created_with_the_runbook_plan_and_driven_through_its_lifecycle() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;

    let created = app.create_flag("checkout", json!({"internal_users": ["ann@corp"]})).await;
    assert_eq!(created["status"], "pending");
    assert_eq!(created["version"], 1);
    let stages: Vec<_> =
        created["definition"]["stages"].as_array().expect("stages").iter().map(|s| s["name"].clone()).collect();
    assert_eq!(stages, ["internal", "10%", "50%", "100%"]);
    assert_eq!(created["definition"]["stages"][3]["soak_secs"], 22 * 3600);

    // Pending: off for everyone, internal users too.
    assert_eq!(app.evaluate("checkout", "ann@corp").await["reason"], "flag_off");

    let s = app.must("checkout", "start").await;
    assert_eq!(
        (s["status"].as_str(), s["stage"].as_str(), s["version"].as_u64()),
        (Some("running"), Some("internal"), Some(2))
    );
    assert_eq!(s["soak_remaining_secs"], 3600);
    let ann = app.evaluate("checkout", "ann@corp").await;
    assert_eq!((ann["enabled"].as_bool(), ann["reason"].as_str()), (Some(true), Some("internal_user")));
    let other = app.evaluate("checkout", "user-1").await;
    assert_eq!(
        (other["enabled"].as_bool(), other["reason"].as_str(), other["bucket"].as_u64()),
        (Some(false), Some("not_in_rollout"), Some(19))
    );

    app.must("checkout", "advance").await;
    let ten = app.evaluate("checkout", "user-1").await;
    assert_eq!(
        (ten["percent"].as_u64(), ten["stage"].as_str(), ten["enabled"].as_bool()),
        (Some(10), Some("10%"), Some(false))
    );
    app.must("checkout", "advance").await;
    // user-1 is in bucket 19: in at 50%.
    let fifty = app.evaluate("checkout", "user-1").await;
    assert_eq!((fifty["enabled"].as_bool(), fifty["reason"].as_str()), (Some(true), Some("in_rollout")));
    assert_eq!(app.evaluate("checkout", "prod-audit-test").await["enabled"], true, "bucket 49 < 50");
    assert_eq!(app.evaluate("checkout", "smoke-test-1700000000").await["enabled"], false, "bucket 57 >= 50");

    let paused = app.must("checkout", "pause").await;
    assert_eq!((paused["status"].as_str(), paused["percent"].as_u64()), (Some("paused"), Some(50)));
    assert_eq!(app.evaluate("checkout", "user-1").await["enabled"], true, "paused holds the percentage");
    app.must("checkout", "resume").await;

    let r = app.admin_post("/flags/checkout/rollback", json!({"reason": "errors up"})).await;
    assert_eq!((r.status, r.body["status"].as_str(), r.body["percent"].as_u64()), (200, Some("rolled_back"), Some(0)));
    assert_eq!(
        app.evaluate("checkout", "ann@corp").await["reason"],
        "flag_off",
        "rollback is 0% for internal users too"
    );

    let resumed = app.must("checkout", "resume").await;
    assert_eq!((resumed["stage"].as_str(), resumed["percent"].as_u64()), (Some("10%"), Some(10)));
    app.must("checkout", "advance").await;
    app.must("checkout", "advance").await;
    let done = app.must("checkout", "advance").await;
    assert_eq!((done["status"].as_str(), done["percent"].as_u64()), (Some("completed"), Some(100)));
    assert_eq!(app.evaluate("checkout", "smoke-test-1700000000").await["enabled"], true);

    let history = app.admin_get("/flags/checkout/history").await;
    assert_eq!(history.status, 200);
    let events = history.body["events"].as_array().expect("events");
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().expect("action")).collect();
    assert_eq!(
        actions,
        [
            "advance", "advance", "advance", "resume", "rollback", "resume", "pause", "advance", "advance", "start",
            "create"
        ]
    );
    let rollback = &events[4];
    assert_eq!(rollback["actor"], "operator:ann");
    assert_eq!(rollback["reason"], "errors up");
    assert_eq!(rollback["from"], json!({"status": "running", "stage": "50%", "percent": 50}));
    assert_eq!(rollback["to"], json!({"status": "rolled_back", "stage": "50%", "percent": 0}));
    assert_eq!(rollback["at"], "2023-11-14T22:13:20.000Z");
    assert_eq!(events[0]["version"], 11);
    assert_eq!(app.admin_get("/flags/checkout/history?limit=2").await.body["events"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn flags_are_listed_shown_updated_and_deleted() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    app.create_flag("b", json!({"salt": "b-salt", "stages": [{"name": "half", "percent": 50, "soak_secs": 5}]})).await;
    app.create_flag("a", json!({})).await;

    let list = app.admin_get("/flags").await;
    assert_eq!(list.status, 200);
    let names: Vec<&str> =
        list.body["flags"].as_array().expect("flags").iter().map(|f| f["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["a", "b"]);

    let b = app.admin_get("/flags/b").await;
    assert_eq!((b.status, b.body["definition"]["salt"].as_str()), (200, Some("b-salt")));
    assert!(b.body["stage_entered_at"].as_str().is_some());

    // A salted flag hashes "{salt}:{user}".
    app.must("b", "start").await;
    let e = app.evaluate("b", "user-1").await;
    assert_eq!(e["bucket"].as_u64(), Some(u64::from(rollout_controller::domain::bucket::bucket(b"b-salt:user-1"))));

    // Updating keeps the rollout where it is and bumps the version.
    let updated = app.admin_put("/flags/b", json!({"salt": "b-salt", "internal_users": ["vip"], "stages": [{"name": "half", "percent": 50, "soak_secs": 5}, {"name": "all", "percent": 100}]})).await;
    assert_eq!(
        (updated.status, updated.body["status"].as_str(), updated.body["version"].as_u64()),
        (200, Some("running"), Some(3))
    );
    assert_eq!(app.evaluate("b", "vip").await["reason"], "internal_user");
    // Removing the stage the rollout is in is refused.
    let refused = app.admin_put("/flags/b", json!({"stages": [{"name": "other", "percent": 50}]})).await;
    assert_eq!((refused.status, refused.body["error"].as_str()), (409, Some("stage_removed")));

    let deleted = app.admin_delete("/flags/b").await;
    assert_eq!(deleted.status, 204);
    assert_eq!(app.admin_get("/flags/b").await.status, 404);
    assert_eq!(app.get("/flags/b/users/u").await.status, 404);
    assert_eq!(app.admin_delete("/flags/b").await.body["error"], "flag_not_found");
}

#[tokio::test]
async fn a_deletion_is_recorded_with_actor_reason_and_last_state_in_an_audit_that_outlives_the_flag() {
    let redis = RedisServer::start();
    let with_reader = || {
        TestApp::on(&redis).settings(|s| {
            s.read_tokens = vec![NamedToken { name: "dash".into(), secret: "read-token-1".to_owned().into() }];
        })
    };
    let app = with_reader().spawn().await;
    let other = with_reader().spawn().await;
    let created = app.create_flag("checkout", json!({})).await;
    app.must("checkout", "start").await;
    app.must("checkout", "advance").await;
    app.clock.advance_secs(90);

    let refused = [
        app.send(app.http.delete(app.url("/flags/checkout?reason=a")).bearer_auth(ADMIN).json(&json!({"reason": "b"})))
            .await,
        app.send(
            app.http.delete(app.url("/flags/checkout")).bearer_auth(ADMIN).json(&json!({"reason": "x".repeat(1001)})),
        )
        .await,
        app.send(app.http.delete(app.url("/flags/checkout")).bearer_auth(ADMIN).json(&json!({"why": "typo"}))).await,
        app.send(app.http.delete(app.url("/flags/checkout?colour=red")).bearer_auth(ADMIN)).await,
    ];
    let refused: Vec<(u16, &str)> =
        refused.iter().map(|r| (r.status, r.body["error"].as_str().unwrap_or(""))).collect();
    assert_eq!(refused, [(422, "invalid_body"), (422, "invalid_body"), (422, "invalid_body"), (400, "invalid_query")]);
    assert_eq!(app.admin_get("/flags/checkout").await.status, 200, "a refused deletion deletes nothing");

    let deleted = app.admin_delete("/flags/checkout?reason=replaced%20by%20checkout-v2").await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert_eq!(app.admin_get("/flags/checkout/history").await.status, 404, "the history went with the flag");
    let first = json!({
        "flag": "checkout",
        "at": "2023-11-14T22:14:50.000Z",
        "actor": "operator:ann",
        "reason": "replaced by checkout-v2",
        "version": 3,
        "last": {"status": "running", "stage": "10%", "percent": 10},
        "created_at": created["created_at"],
    });
    assert_eq!(app.admin_get("/deletions").await.body, json!({"deletions": [first.clone()]}));

    // Created again and deleted again, the reason in the body this time, then without one.
    app.create_flag("checkout", json!({})).await;
    let deleted = app
        .send(app.http.delete(app.url("/flags/checkout")).bearer_auth(ADMIN).json(&json!({"reason": "again"})))
        .await;
    assert_eq!(deleted.status, 204);
    app.create_flag("search", json!({})).await;
    assert_eq!(app.admin_delete("/flags/search").await.status, 204);
    assert_eq!(app.admin_delete("/flags/nope").await.status, 404);

    // Any replica reads the same audit, with a read token too; newest first.
    let read = |token: Option<&'static str>, query: &'static str| {
        let mut req = other.http.get(other.url(&format!("/deletions{query}")));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        other.send(req)
    };
    let all = read(Some("read-token-1"), "").await;
    assert_eq!(all.status, 200);
    let records = all.body["deletions"].as_array().cloned().expect("deletions");
    let summary: Vec<(&str, &str, u64)> = records
        .iter()
        .map(|r| {
            (
                r["flag"].as_str().expect("flag"),
                r["reason"].as_str().expect("reason"),
                r["version"].as_u64().expect("v"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("search", "delete requested", 1), ("checkout", "again", 1), ("checkout", "replaced by checkout-v2", 3)]
    );
    assert_eq!(records[2], first);
    assert_eq!(read(Some("read-token-1"), "?limit=1").await.body["deletions"].as_array().map(Vec::len), Some(1));
    let limits = [read(Some(ADMIN), "?limit=0").await, read(Some(ADMIN), "?limit=10001").await];
    assert!(limits.iter().all(|r| (r.status, r.body["error"].as_str()) == (400, Some("invalid_query"))));
    assert_eq!(read(None, "").await.status, 401, "the audit names operators: it needs a token");
}

#[tokio::test]
async fn the_default_flag_answers_get_flag_user() {
    let app = TestApp::in_memory().spawn().await;
    let missing = app.get("/flag/user-1").await;
    assert_eq!((missing.status, missing.body["error"].as_str()), (404, Some("flag_not_found")));
    app.create_flag("default", json!({"stages": [{"name": "all", "percent": 100}]})).await;
    app.must("default", "start").await;
    let r = app.get("/flag/user-1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["flag"], "default");
    assert_eq!(r.body["user"], "user-1");
    assert_eq!(r.body["enabled"], true);
    for key in ["bucket", "percent", "stage", "status", "version", "reason"] {
        assert!(r.body.get(key).is_some(), "missing {key}");
    }
}

#[tokio::test]
async fn every_error_code_comes_as_json() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    app.create_flag("f", json!({})).await;
    let before = app.admin_get("/flags/f").await.body;

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (app.http.get(app.url("/flags/bad%2Fname/users/u")), 400, "invalid_flag_name"),
        (app.http.get(app.url(&format!("/flags/{}/users/u", "a".repeat(129)))), 400, "invalid_flag_name"),
        (app.http.get(app.url(&format!("/flags/f/users/{}", "u".repeat(513)))), 400, "invalid_user"),
        (app.http.get(app.url("/flags/f/users/%FF%FE")), 400, "invalid_user"),
        (app.http.get(app.url("/flag/%C3%28")), 400, "invalid_user"),
        (app.http.get(app.url("/flag/")), 400, "invalid_user"),
        (app.http.get(app.url("/flags/f/users/")), 400, "invalid_user"),
        (app.http.get(app.url("/flags/nope/users/u")), 404, "flag_not_found"),
        (app.http.get(app.url("/flags/nope")).bearer_auth(ADMIN), 404, "flag_not_found"),
        (app.http.post(app.url("/flags/nope/start")).bearer_auth(ADMIN), 404, "flag_not_found"),
        (app.http.get(app.url("/flags/nope/history")).bearer_auth(ADMIN), 404, "flag_not_found"),
        (app.http.get(app.url("/no/such/route")), 404, "not_found"),
        (app.http.patch(app.url("/flags/f")).bearer_auth(ADMIN), 405, "method_not_allowed"),
        (app.http.get(app.url("/flags")), 401, "unauthorized"),
        (app.http.get(app.url("/flags")).bearer_auth("wrong-token"), 401, "unauthorized"),
        (app.http.put(app.url("/flags/f")).json(&json!({})), 401, "unauthorized"),
        (app.http.post(app.url("/flags/f/start")).header("authorization", "Basic YTpi"), 401, "unauthorized"),
        (
            app.http
                .put(app.url("/flags/f"))
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body("{\"stages\": ["),
            400,
            "malformed_json",
        ),
        (
            app.http
                .put(app.url("/flags/f"))
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body(vec![0xff, 0xfe]),
            400,
            "malformed_json",
        ),
        (
            app.http.put(app.url("/flags/f")).bearer_auth(ADMIN).header("content-type", "text/plain").body("{}"),
            415,
            "unsupported_media_type",
        ),
        (
            app.http
                .put(app.url("/flags/f"))
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body(format!("{{\"salt\": \"{}\"}}", "s".repeat(70_000))),
            413,
            "payload_too_large",
        ),
        (
            app.http
                .put(app.url("/flags/f"))
                .bearer_auth(ADMIN)
                .json(&json!({"stages": [{"name": "a", "percent": 101}]})),
            422,
            "invalid_definition",
        ),
        (
            app.http
                .put(app.url("/flags/f"))
                .bearer_auth(ADMIN)
                .json(&json!({"stages": [{"name": "a", "percent": 300}]})),
            422,
            "invalid_body",
        ),
        (
            app.http
                .put(app.url("/flags/f"))
                .bearer_auth(ADMIN)
                .json(&json!({"stages": [{"name": "a", "percent": -1}]})),
            422,
            "invalid_body",
        ),
        (
            app.http
                .put(app.url("/flags/f"))
                .bearer_auth(ADMIN)
                .json(&json!({"stages": [{"name": "a", "percent": 50}, {"name": "b", "percent": 10}]})),
            422,
            "invalid_definition",
        ),
        (
            app.http
                .put(app.url("/flags/f"))
                .bearer_auth(ADMIN)
                .json(&json!({"stages": [{"name": "a"}, {"name": "a"}]})),
            422,
            "invalid_definition",
        ),
        (app.http.put(app.url("/flags/f")).bearer_auth(ADMIN).json(&json!({"colour": "red"})), 422, "invalid_body"),
        (app.http.post(app.url("/flags/f/advance")).bearer_auth(ADMIN), 409, "invalid_transition"),
        (app.http.post(app.url("/flags/f/rollback")).bearer_auth(ADMIN), 409, "invalid_transition"),
        (
            app.http.post(app.url("/flags/f/start")).bearer_auth(ADMIN).json(&json!({"expected_version": 9})),
            409,
            "version_conflict",
        ),
        (
            app.http.post(app.url("/flags/f/start")).bearer_auth(ADMIN).json(&json!({"expected_version": "one"})),
            422,
            "invalid_body",
        ),
        (
            app.http.post(app.url("/flags/f/start")).bearer_auth(ADMIN).json(&json!({"reason": "r".repeat(1001)})),
            422,
            "invalid_body",
        ),
        (app.http.get(app.url("/flags/f/history?limit=0")).bearer_auth(ADMIN), 400, "invalid_query"),
        (app.http.get(app.url("/flags/f/history?limit=abc")).bearer_auth(ADMIN), 400, "invalid_query"),
    ];
    for (req, status, code) in cases {
        let req = req.build().expect("request");
        let what = format!("{} {}", req.method(), req.url());
        let r = app.exec(req).await;
        assert_eq!((r.status, r.body["error"].as_str()), (status, Some(code)), "{what}: {}", r.body);
        assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: message");
    }
    assert_eq!(app.admin_get("/flags/f").await.body, before, "no bad request changed the flag");
}

#[tokio::test]
async fn durations_are_accepted_as_strings_and_shown_as_seconds() {
    let app = TestApp::in_memory().spawn().await;
    let definition = json!({
        "window_secs": "5m",
        "review_after_secs": "1d",
        "stages": [{"name": "a", "percent": 10, "soak_secs": "1h30m"}, {"name": "b", "percent": 100, "soak_secs": 90}],
        "checks": [{"name": "smoke", "url": "http://127.0.0.1:1/", "when": "during", "interval_secs": "2m", "timeout_secs": "10s"}],
    });
    let created = app.create_flag("f", definition).await;
    let d = &created["definition"];
    assert_eq!(
        (&d["window_secs"], &d["review_after_secs"], &d["stages"][0]["soak_secs"], &d["stages"][1]["soak_secs"]),
        (&json!(300), &json!(86_400), &json!(5400), &json!(90))
    );
    assert_eq!((&d["checks"][0]["interval_secs"], &d["checks"][0]["timeout_secs"]), (&json!(120), &json!(10)));
    let cases = [
        (json!({"window_secs": "soon"}), "window_secs: \"soon\" is not a duration"),
        (
            json!({"stages": [{"name": "a", "soak_secs": "1500ms"}]}),
            "stages[0].soak_secs: \"1500ms\" is not a whole number of seconds",
        ),
        (json!({"stages": [{"name": "a", "soak_secs": -5}]}), "stages[0].soak_secs: -5 is negative"),
        (
            json!({"window_secs": true}),
            "window_secs: invalid type: boolean `true`, expected an integer of seconds or a duration",
        ),
    ];
    let cases = cases.map(|(body, message)| (body, "invalid_body", message));
    let range = (json!({"window_secs": "2d"}), "invalid_definition", "window_secs: must be between 10 and 86400");
    for (body, code, message) in cases.into_iter().chain([range]) {
        let r = app.admin_put("/flags/g", body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_eq!(r.body["error"], code, "{body}: {}", r.body);
        assert!(r.body["message"].as_str().is_some_and(|m| m.starts_with(message)), "{body}: {}", r.body);
    }
}

#[tokio::test]
async fn a_definition_saved_at_a_stale_version_is_refused_and_version_zero_only_creates() {
    let app = TestApp::in_memory().spawn().await;

    let created = app.admin_put("/flags/checkout?expected_version=0", json!({"salt": "a"})).await;
    assert_eq!((created.status, created.body["version"].as_u64()), (201, Some(1)), "{}", created.body);
    let again = app.admin_put("/flags/checkout?expected_version=0", json!({"salt": "b"})).await;
    assert_eq!((again.status, again.body["error"].as_str()), (409, Some("version_conflict")), "{}", again.body);

    let edited = app.admin_put("/flags/checkout?expected_version=1", json!({"salt": "c"})).await;
    assert_eq!((edited.status, edited.body["version"].as_u64()), (200, Some(2)), "{}", edited.body);
    let stale = app.admin_put("/flags/checkout?expected_version=1", json!({"salt": "d"})).await;
    assert_eq!((stale.status, stale.body["error"].as_str()), (409, Some("version_conflict")), "{}", stale.body);
    assert_eq!(app.flag("checkout").await["definition"]["salt"], "c", "the stale edit changed nothing");

    // An edit of a flag deleted meanwhile does not bring it back.
    assert_eq!(app.admin_delete("/flags/checkout").await.status, 204);
    let gone = app.admin_put("/flags/checkout?expected_version=2", json!({})).await;
    assert_eq!((gone.status, gone.body["error"].as_str()), (409, Some("version_conflict")), "{}", gone.body);
    assert_eq!(app.admin_get("/flags/checkout").await.status, 404);

    let bad = app.admin_put("/flags/checkout?expected_version=soon", json!({})).await;
    assert_eq!((bad.status, bad.body["error"].as_str()), (400, Some("invalid_query")), "{}", bad.body);
}
