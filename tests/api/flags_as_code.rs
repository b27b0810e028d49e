//! Flags as code: `rollout apply`, `export` and `delete` — the real binary against a running app,
//! through files in all three formats; and the `PUT /flags/{flag}?expected_version=` they rely on.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rollout_controller::cli::flags_as_code::{Format, parse};
use rollout_controller::domain::plan::FlagDefinition;
use serde_json::json;

use crate::helpers::{ADMIN, CliRun, TestApp, rollout_cli};

fn ok(run: CliRun) -> CliRun {
    assert_eq!(run.code, 0, "{run:?}");
    run
}

/// The lines of an apply's diff that start with `mark` (`+`, `~`, `=`, `-`).
fn marked<'a>(run: &'a CliRun, mark: &str) -> Vec<&'a str> {
    run.stdout.lines().filter(|l| l.starts_with(&format!("{mark} "))).collect()
}

/// 20 flags over three files, one per format, with durations written both ways.
fn write_flags(dir: &Path) {
    let mut toml = String::new();
    for i in 0..10 {
        toml.push_str(&format!(
            "[flags.toml-{i}]\nsalt = \"toml-{i}\"\nwindow_secs = \"5m\"\ninternal_users = [\"ann@corp\"]\n\
             [[flags.toml-{i}.stages]]\nname = \"internal\"\ninternal_only = true\nsoak_secs = \"1h\"\n\
             [[flags.toml-{i}.stages]]\nname = \"all\"\npercent = 100\nsoak_secs = \"1h30m\"\n\n"
        ));
    }
    std::fs::write(dir.join("a.toml"), toml).expect("write");
    let mut yaml = String::from("flags:\n");
    for i in 0..5 {
        yaml.push_str(&format!(
            "  yaml-{i}:\n    thresholds: {{error_rate: 0.02, bounce_rate: 0.1}}\n    on_breach: pause\n    min_samples: 50\n"
        ));
    }
    std::fs::write(dir.join("b.yaml"), yaml).expect("write");
    let json: BTreeMap<String, serde_json::Value> = (0..5)
        .map(|i| (format!("json-{i}"), json!({"review_after_secs": "2d", "advance_without_data": true})))
        .collect();
    std::fs::write(dir.join("c.json"), json!({"flags": json}).to_string()).expect("write");
    // Not a flags file: ignored.
    std::fs::write(dir.join("README.md"), "the flags of the shop").expect("write");
}

fn read_dir_flags(dir: &Path) -> BTreeMap<String, FlagDefinition> {
    let mut all = BTreeMap::new();
    for (file, format) in [("a.toml", Format::Toml), ("b.yaml", Format::Yaml), ("c.json", Format::Json)] {
        let text = std::fs::read_to_string(dir.join(file)).expect("read");
        all.extend(parse(&text, format, Path::new(file)).expect("valid").flags);
    }
    all
}

#[tokio::test]
async fn apply_shows_each_change_writes_only_changes_and_export_round_trips() {
    let app = TestApp::in_memory().spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_flags(dir.path());
    let path = dir.path().to_str().expect("utf-8");

    let dry = ok(app.cli(&["apply", "-f", path, "--dry-run"]).await);
    assert_eq!(marked(&dry, "+").len(), 20, "{}", dry.stdout);
    assert!(dry.stdout.ends_with("20 added, 0 changed, 0 unchanged, 0 deleted (dry run: nothing applied)\n"));
    assert_eq!(app.admin_get("/flags").await.body["flags"], json!([]), "a dry run writes nothing");

    let first = ok(app.cli(&["apply", "-f", path]).await);
    assert_eq!(marked(&first, "+").len(), 20, "{}", first.stdout);
    assert!(first.stdout.ends_with("20 added, 0 changed, 0 unchanged, 0 deleted\n"), "{}", first.stdout);
    let stored = app.flag("toml-3").await;
    assert_eq!(
        (&stored["definition"]["window_secs"], &stored["definition"]["stages"][1]["soak_secs"], &stored["version"]),
        (&json!(300), &json!(5400), &json!(1)),
        "durations arrive as seconds"
    );
    assert_eq!(app.flag("yaml-2").await["definition"]["on_breach"], "pause");

    // One flag edited in its file: exactly one change, naming the field, old → new.
    let text = std::fs::read_to_string(dir.path().join("a.toml")).expect("read");
    let edited = text.replacen("soak_secs = \"1h30m\"", "soak_secs = \"2h\"", 1);
    std::fs::write(dir.path().join("a.toml"), edited).expect("write");
    let dry = ok(app.cli(&["apply", "-f", path, "--dry-run"]).await);
    assert_eq!(marked(&dry, "~"), ["~ toml-0: would be changed"], "{}", dry.stdout);
    assert!(dry.stdout.contains("\n    stages[1].soak_secs: 5400 → 7200\n"), "{}", dry.stdout);
    assert_eq!(marked(&dry, "=").len(), 19);
    assert_eq!(app.flag("toml-0").await["version"], 1, "a dry run writes nothing");
    let second = ok(app.cli(&["apply", "-f", path]).await);
    assert!(second.stdout.ends_with("0 added, 1 changed, 19 unchanged, 0 deleted\n"), "{}", second.stdout);
    assert_eq!(app.flag("toml-0").await["version"], 2);
    assert_eq!(app.flag("toml-1").await["version"], 1, "unchanged flags are not written");

    // Export writes what apply reads: equal to the files, parsed, in every format; applying an
    // export changes nothing.
    let files = read_dir_flags(dir.path());
    for (format, ext) in [(Format::Toml, "toml"), (Format::Yaml, "yaml"), (Format::Json, "json")] {
        let exported = ok(app.cli(&["export", "-o", ext]).await);
        let flags = parse(&exported.stdout, format, Path::new("export")).expect("export parses").flags;
        assert_eq!(flags, files, "{ext}");
        let file = dir.path().join(format!("export.{ext}"));
        std::fs::write(&file, &exported.stdout).expect("write");
        let again = ok(app.cli(&["apply", "-f", file.to_str().expect("utf-8")]).await);
        assert!(again.stdout.ends_with("0 added, 0 changed, 20 unchanged, 0 deleted\n"), "{}", again.stdout);
        std::fs::remove_file(file).expect("remove");
    }
    let two = ok(app.cli(&["export", "-o", "json", "json-1", "toml-2"]).await);
    let names: Vec<String> =
        parse(&two.stdout, Format::Json, Path::new("e")).expect("json").flags.into_keys().collect();
    assert_eq!(names, ["json-1", "toml-2"]);

    // Prune: flags not in the files are deleted, only when confirmed.
    app.create_flag("stray", json!({})).await;
    std::fs::remove_file(dir.path().join("c.json")).expect("remove");
    let refused = app.cli(&["apply", "-f", path, "--prune"]).await;
    assert_eq!(refused.code, 1, "no terminal, no --yes: {refused:?}");
    assert!(refused.stderr.contains("not deleting 6 flag(s) (json-0, json-1, json-2, json-3, json-4, stray)"));
    assert_eq!(app.admin_get("/flags/stray").await.status, 200, "nothing deleted");
    let pruned = ok(app.cli(&["apply", "-f", path, "--prune", "--yes"]).await);
    assert_eq!(marked(&pruned, "-").len(), 6, "{}", pruned.stdout);
    assert!(pruned.stdout.ends_with("0 added, 0 changed, 15 unchanged, 6 deleted\n"), "{}", pruned.stdout);
    let left = app.admin_get("/flags").await.body["flags"].as_array().map(Vec::len);
    assert_eq!(left, Some(15));
    let audit = app.admin_get("/deletions").await.body;
    assert_eq!(audit["deletions"][0]["reason"], "pruned by rollout apply: not in the files");

    ok(app.cli(&["delete", "yaml-0", "--reason", "launched"]).await);
    assert_eq!(app.admin_get("/flags/yaml-0").await.status, 404);
    let gone = app.cli(&["delete", "yaml-0"]).await;
    assert_eq!((gone.code, gone.stderr.trim_end()), (1, "error: no flag named yaml-0"));
}

#[tokio::test]
async fn bad_files_are_refused_before_anything_is_written() {
    let app = TestApp::in_memory().spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8").to_owned()
    };
    let cases = [
        (file("typo.toml", "[flags.a]\nsoak = 5\n"), 2, "unknown field `soak`"),
        (file("bad.yaml", "flags: [\n"), 2, "bad.yaml is not valid"),
        (file("flags.txt", "[flags.a]\n"), 2, "not a .toml, .yaml, .yml or .json file"),
        (file("dur.json", r#"{"flags": {"a": {"window_secs": "soon"}}}"#), 2, "not a duration"),
        (file("plan.toml", "[flags.a]\nstages = []\n"), 1, "flag \"a\": stages: at least one stage is required"),
    ];
    for (path, code, message) in cases {
        let run = app.cli(&["apply", "-f", &path]).await;
        assert_eq!(run.code, code, "{path}: {run:?}");
        assert!(run.stderr.starts_with("error: ") && run.stderr.contains(message), "{path}: {run:?}");
    }
    let missing = app.cli(&["apply", "-f", "/nonexistent/flags.toml"]).await;
    assert_eq!(missing.code, 2, "{missing:?}");
    assert_eq!(app.admin_get("/flags").await.body["flags"], json!([]));
}

/// A proxy in front of the app that, before it forwards the first `PUT`, has another operator
/// redefine that flag: the race `apply` loses between its diff and its write.
async fn racing_proxy(app: &TestApp) -> String {
    use axum::body::{Body, to_bytes};
    use axum::extract::{Request, State};
    use axum::response::Response;

    #[derive(Clone)]
    struct Proxy {
        target: String,
        http: reqwest::Client,
        raced: Arc<AtomicBool>,
    }

    async fn forward(State(p): State<Proxy>, req: Request) -> Response {
        let method = req.method().clone();
        let path = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
        let auth = req.headers().get("authorization").cloned();
        let body = to_bytes(req.into_body(), 1 << 20).await.expect("body");
        if method == reqwest::Method::PUT && !p.raced.swap(true, Ordering::SeqCst) {
            let flag = req_path(&path);
            let other = p.http.put(format!("{}{flag}", p.target)).bearer_auth(ADMIN).json(&json!({"salt": "theirs"}));
            assert_eq!(other.send().await.expect("the other write").status(), 200);
        }
        let mut out = p.http.request(method, format!("{}{path}", p.target)).body(body);
        if let Some(auth) = auth {
            out = out.header("authorization", auth);
        }
        out = out.header("content-type", "application/json");
        let answer = out.send().await.expect("forwarded");
        let status = answer.status();
        let bytes = answer.bytes().await.expect("answer");
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .expect("response")
    }

    /// `/flags/x?expected_version=1` → `/flags/x`.
    fn req_path(path: &str) -> &str {
        path.split('?').next().unwrap_or(path)
    }

    let proxy = Proxy { target: app.base(), http: reqwest::Client::new(), raced: Arc::new(AtomicBool::new(false)) };
    let router = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_flag_changed_between_the_diff_and_the_write_is_not_overwritten_and_apply_exits_1() {
    let app = TestApp::in_memory().spawn().await;
    app.create_flag("checkout", json!({"salt": "old"})).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flags.toml");
    std::fs::write(&path, "[flags.checkout]\nsalt = \"ours\"\n").expect("write");

    let proxy = racing_proxy(&app).await;
    let run =
        rollout_cli(&["apply", "-f", path.to_str().expect("utf-8"), "--server", &proxy], &[("ROLLOUT_TOKEN", ADMIN)])
            .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("~ checkout: changed\n    salt: \"old\" → \"ours\"\n"), "{run:?}");
    assert_eq!(
        run.stderr.trim_end(),
        "error: checkout changed on the server since the diff; nothing written for it: run apply again"
    );
    let stored = app.flag("checkout").await;
    assert_eq!((&stored["definition"]["salt"], &stored["version"]), (&json!("theirs"), &json!(2)), "theirs stands");

    // The API underneath: a stale or a creating expected_version is a 409.
    let stale = app.admin_put("/flags/checkout?expected_version=1", json!({})).await;
    assert_eq!((stale.status, stale.body["error"].as_str()), (409, Some("version_conflict")));
    let exists = app.admin_put("/flags/checkout?expected_version=0", json!({})).await;
    assert_eq!(exists.status, 409);
    let absent = app.admin_put("/flags/new?expected_version=3", json!({})).await;
    assert_eq!(absent.status, 409, "{}", absent.body);
    assert_eq!(app.admin_put("/flags/new?expected_version=0", json!({})).await.status, 201);
    assert_eq!(app.admin_put("/flags/checkout?expected_version=2", json!({})).await.status, 200);
}
