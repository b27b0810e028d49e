//! The operator CLI: the real `rollout` binary against a running app — tables, `--json`, exit codes
//! and the one-line messages of refusals and connection errors.

use std::time::Duration;

use rollout_controller::config::NamedToken;
use rollout_controller::domain::bucket::user_bucket;
use serde_json::json;

use crate::helpers::{ADMIN, CliRun, RedisServer, TestApp, free_port, rollout_cli};

/// The whitespace-separated cells of the table line that starts with `first`.
fn row(run: &CliRun, first: &str) -> Vec<String> {
    run.stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no line starting with {first:?} in:\n{}", run.stdout))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn ok(run: CliRun) -> CliRun {
    assert_eq!(run.code, 0, "{run:?}");
    run
}

#[tokio::test]
async fn operators_drive_a_rollout_end_to_end_from_the_command_line() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    app.create_flag("checkout", json!({"internal_users": ["ann@corp"], "salt": "checkout"})).await;
    app.create_flag("search", json!({})).await;

    let all = ok(app.cli(&["status"]).await);
    let header: Vec<&str> = all.stdout.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["FLAG", "STATUS", "STAGE", "PERCENT", "VERSION", "IN-STAGE", "NEXT-ADVANCE"]);
    assert_eq!(row(&all, "checkout"), ["checkout", "pending", "internal", "0%", "1", "-", "on", "start"]);
    assert_eq!(row(&all, "search")[1], "pending");
    // Columns line up: every row has its STATUS where the header has it.
    let at = all.stdout.find("STATUS").expect("STATUS");
    assert!(all.stdout.lines().skip(1).all(|l| l.get(at..at + 7) == Some("pending")), "{}", all.stdout);

    let started = ok(app.cli(&["start", "checkout", "--reason", "go live"]).await);
    assert_eq!(row(&started, "checkout")[..5], ["checkout", "running", "internal", "0%", "2"]);
    app.clock.advance_secs(1800);
    let half = ok(app.cli(&["status", "checkout"]).await);
    assert_eq!(row(&half, "checkout")[5..], ["30m", "0s", "in", "30m", "0s"], "time in stage and to the next advance");

    let advanced = ok(app.cli(&["advance", "checkout", "--expected-version", "2"]).await);
    assert_eq!(row(&advanced, "checkout")[..5], ["checkout", "running", "10%", "10%", "3"]);
    let json = ok(app.cli(&["--json", "status", "checkout"]).await).json();
    assert_eq!(
        (json["status"].as_str(), json["stage"].as_str(), json["version"].as_u64()),
        (Some("running"), Some("10%"), Some(3))
    );
    assert_eq!(json["in_stage_secs"], 0);
    let list = ok(app.cli(&["status", "--json"]).await).json();
    assert_eq!(list["flags"].as_array().map(Vec::len), Some(2));

    assert_eq!(app.push("checkout", json!({"requests": 1000, "errors": 2})).await.status, 200);
    let health = ok(app.cli(&["health", "checkout"]).await);
    let header: Vec<&str> = health.stdout.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["GUARD", "VALUE", "INTERVAL", "THRESHOLD", "SAMPLES", "VERDICT"]);
    let error_rate = row(&health, "error_rate");
    assert_eq!([&error_rate[..2], &error_rate[3..]].concat(), ["error_rate", "0.002", ">", "0.01", "1000/100", "ok"]);
    let interval: Vec<f64> =
        error_rate[2].trim_matches(['[', ']']).split(',').map(|v| v.parse().expect("a number")).collect();
    assert!(interval.len() == 2 && interval[0] < 0.002 && interval[1] > 0.002 && interval[1] <= 0.01, "{interval:?}");
    assert_eq!(row(&health, "delivery_rate"), ["delivery_rate", "-", "-", "<", "0.95", "0/100", "insufficient_data"]);
    assert!(health.stdout.contains("overall: ok (checkout running 10%"), "{}", health.stdout);
    assert_eq!(ok(app.cli(&["health", "checkout", "--json"]).await).json()["verdict"], "ok");

    let bucket = user_bucket(Some("checkout"), "user-1");
    let explained = ok(app.cli(&["explain", "checkout", "user-1"]).await);
    assert_eq!(row(&explained, "hashed").join(" "), "hashed key checkout:user-1");
    assert_eq!(row(&explained, "bucket")[1], bucket.to_string());
    let explained = ok(app.cli(&["--json", "explain", "checkout", "user-1"]).await).json();
    let enabled = bucket < 10;
    assert_eq!(
        explained,
        json!({"flag": "checkout", "user": "user-1", "salt": "checkout", "hashed_key": "checkout:user-1",
               "bucket": bucket, "percent": 10, "stage": "10%", "status": "running", "internal_user": false,
               "enabled": enabled, "reason": if enabled { "in_rollout" } else { "not_in_rollout" }})
    );
    let ann = ok(app.cli(&["--json", "explain", "checkout", "ann@corp"]).await).json();
    assert_eq!((ann["internal_user"].as_bool(), ann["reason"].as_str()), (Some(true), Some("internal_user")));

    let rolled = ok(app.cli(&["rollback", "checkout", "--reason", "errors up"]).await);
    assert_eq!(row(&rolled, "checkout")[1..4], ["rolled_back", "10%", "0%"]);
    assert_eq!(app.evaluate("checkout", "ann@corp").await["enabled"], false);

    let history = ok(app.cli(&["history", "checkout", "--limit", "2"]).await);
    let lines: Vec<&str> = history.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "header and two events:\n{}", history.stdout);
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["AT", "ACTION", "FROM→TO", "ACTOR", "REASON"]);
    assert!(lines[1].contains("rollback") && lines[1].contains("10% (10%) → rolled_back (0%)"), "{}", lines[1]);
    assert!(lines[1].contains("operator:ann") && lines[1].ends_with("errors up"), "{}", lines[1]);
    assert!(lines[2].contains("advance") && lines[2].contains("internal (0%) → 10% (10%)"), "{}", lines[2]);
    let events = ok(app.cli(&["--json", "history", "checkout"]).await).json();
    let actions: Vec<&str> =
        events["events"].as_array().expect("events").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["rollback", "advance", "start", "create"]);

    let report = ok(app.cli(&["report", "checkout"]).await);
    assert!(report.stdout.starts_with("# Post-launch review: checkout"), "{}", report.stdout);
    assert!(report.stdout.contains("| 10% (10%) | operator:ann | operator | errors up |"), "{}", report.stdout);
    let report = ok(app.cli(&["report", "checkout", "--format", "json"]).await).json();
    assert_eq!(
        (report["status"].as_str(), report["rollbacks"][0]["reason"].as_str()),
        (Some("rolled_back"), Some("errors up"))
    );
    assert_eq!(ok(app.cli(&["--json", "report", "checkout"]).await).json()["flag"], "checkout");
}

#[tokio::test]
async fn refusals_exit_1_with_the_servers_reason_on_one_line() {
    let app = TestApp::in_memory().spawn().await;
    app.create_flag("f", json!({})).await;
    let cases: [(&[&str], &str); 5] = [
        (&["status", "nope"], "error: no flag named nope"),
        (&["history", "nope"], "error: no flag named nope"),
        (&["explain", "nope", "user-1"], "error: no flag named nope"),
        (&["advance", "f"], "error: cannot advance a flag that is pending"),
        (&["start", "f", "--expected-version", "7"], "error: the flag is at version 1, not the expected 7"),
    ];
    for (args, message) in cases {
        let run = app.cli(args).await;
        assert_eq!((run.code, run.stderr.trim_end()), (1, message), "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
    }
    for token in ["", "not-the-admin-token"] {
        let run = app.cli_with_token(token, &["status"]).await;
        assert_eq!(
            (run.code, run.stderr.trim_end()),
            (1, "error: unauthorized: set --token or ROLLOUT_TOKEN"),
            "{run:?}"
        );
    }
    assert_eq!(app.admin_get("/flags/f").await.body["status"], "pending", "nothing changed");
}

#[tokio::test]
async fn a_read_token_may_explain_but_not_change_state() {
    let app = TestApp::in_memory()
        .settings(|s| s.read_tokens = vec![NamedToken { name: "app".into(), secret: "read-token-1".to_owned().into() }])
        .spawn()
        .await;
    app.create_flag("f", json!({})).await;
    let run = app.cli_with_token("read-token-1", &["start", "f"]).await;
    assert_eq!((run.code, run.stderr.trim_end()), (1, "error: this token may not change or read rollout state"));
    assert_eq!(app.admin_get("/flags/f").await.body["status"], "pending", "nothing changed");
    let run = app.cli_with_token("read-token-1", &["--json", "explain", "f", "user-1"]).await;
    assert_eq!((run.code, run.json()["reason"].as_str()), (0, Some("flag_off")), "{run:?}");
}

#[tokio::test]
async fn usage_and_connection_errors_exit_2() {
    let usage: [&[&str]; 5] = [
        &["frobnicate"],
        &["start"],
        &["history", "f", "--limit", "0"],
        &["report", "f", "--format", "pdf"],
        &["status", "--timeout-secs", "0"],
    ];
    for args in usage {
        let run = rollout_cli(args, &[]).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.starts_with("error:"), "{run:?}");
    }

    let refused = format!("http://127.0.0.1:{}", free_port());
    let run = rollout_cli(&["status", "--server", &refused], &[]).await;
    assert_eq!(
        (run.code, run.stderr.trim_end()),
        (2, format!("error: cannot reach {refused}: connection refused").as_str())
    );
    let run = rollout_cli(&["status"], &[("ROLLOUT_SERVER", &refused)]).await;
    assert_eq!(run.code, 2, "the server comes from ROLLOUT_SERVER too: {run:?}");

    // A server that accepts and never answers: the client gives up after its timeout.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hanging_url = format!("http://{}", hanging.local_addr().expect("addr"));
    let started = std::time::Instant::now();
    let run = rollout_cli(&["status", "--server", &hanging_url, "--timeout-secs", "1"], &[]).await;
    assert_eq!(
        (run.code, run.stderr.trim_end()),
        (2, format!("error: cannot reach {hanging_url}: no answer within 1s").as_str())
    );
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    drop(hanging);

    let run = rollout_cli(&["status", "--server", "localhost:8080"], &[]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.starts_with("error: invalid server URL \"localhost:8080\""), "{run:?}");
}

#[tokio::test]
async fn the_token_is_never_printed() {
    let app = TestApp::in_memory().spawn().await;
    app.create_flag("f", json!({})).await;
    for args in
        [&["--help"][..], &["status", "--help"], &["status"], &["--json", "status"], &["status", "nope"], &["doctor"]]
    {
        let run = app.cli(args).await;
        assert!(!run.stdout.contains(ADMIN) && !run.stderr.contains(ADMIN), "{args:?} printed the token: {run:?}");
    }
    let help = app.cli(&["--help"]).await;
    assert!(help.stdout.contains("ROLLOUT_TOKEN") && help.stdout.contains("ROLLOUT_SERVER"), "{}", help.stdout);
}

#[tokio::test]
async fn serve_refuses_the_operator_options_and_the_operator_commands_refuse_serves() {
    let cases: [(&[&str], &str); 6] = [
        (
            &["serve", "--json"],
            "unexpected argument '--json' found\n\n  tip: --json is an option of the operator commands",
        ),
        (&["serve", "--token", "x"], "unexpected argument '--token'"),
        (&["--json", "serve"], "--json is an option of the operator commands; `rollout serve` does not take it"),
        (
            &["-o", "yaml", "serve"],
            "-o/--output is an option of the operator commands; `rollout serve` does not take it",
        ),
        (&["status", "--redis-url", "redis://127.0.0.1:1"], "unexpected argument '--redis-url'"),
        (
            &["-o", "yaml", "apply", "-f", "x.toml"],
            "-o/--output is an option of the read commands; `rollout apply` does not take it",
        ),
    ];
    for (args, message) in cases {
        let run = rollout_cli(args, &[]).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.starts_with("error: ") && run.stderr.contains(message), "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
    }
    let help = rollout_cli(&["serve", "--help"], &[]).await;
    assert!(!help.stdout.contains("--server") && !help.stdout.contains("--json"), "{}", help.stdout);
    // The environment of a service may well hold ROLLOUT_SERVER or ROLLOUT_TOKEN: not an error.
    let run =
        rollout_cli(&["serve", "--listen", "nonsense"], &[("ROLLOUT_SERVER", "http://x"), ("ROLLOUT_TOKEN", "t")])
            .await;
    assert!(run.stderr.contains("invalid value 'nonsense' for '--listen"), "{run:?}");
}

#[tokio::test]
async fn operator_options_go_before_or_after_the_command_and_every_read_prints_yaml() {
    let app = TestApp::in_memory().spawn().await;
    app.create_flag("checkout", json!({"stages": [{"name": "all", "percent": 100, "soak_secs": "90s"}]})).await;
    let before = ok(app.cli(&["-o", "yaml", "status", "checkout"]).await);
    let after = ok(app.cli(&["status", "checkout", "-o", "yaml"]).await);
    assert_eq!(before.stdout, after.stdout);
    let yaml: serde_json::Value = serde_norway::from_str(&after.stdout).expect("YAML");
    assert_eq!((&yaml["status"], &yaml["definition"]["stages"][0]["soak_secs"]), (&json!("pending"), &json!(90)));
    let json = ok(app.cli(&["status", "checkout", "-o", "json"]).await).json();
    assert_eq!(json, ok(app.cli(&["--json", "status", "checkout"]).await).json(), "--json is -o json");
    for args in
        [&["history", "checkout"][..], &["health", "checkout"], &["explain", "checkout", "u"], &["report", "checkout"]]
    {
        let run = ok(app.cli(&[args, &["-o", "yaml"]].concat()).await);
        let parsed: serde_json::Value = serde_norway::from_str(&run.stdout).expect("YAML");
        assert!(parsed.is_object(), "{args:?}: {}", run.stdout);
    }
    let both = app.cli(&["status", "--json", "-o", "yaml"]).await;
    assert_eq!(both.code, 2, "{both:?}");
    // The server given after the command wins over the environment's.
    let refused = format!("http://127.0.0.1:{}", free_port());
    let run = rollout_cli(
        &["--server", &refused, "status", "--server", &app.base(), "--timeout", "5s"],
        &[("ROLLOUT_TOKEN", ADMIN)],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
}

#[tokio::test]
async fn every_command_has_examples_in_its_help() {
    let commands = [
        "serve",
        "status",
        "start",
        "cancel",
        "approve",
        "advance",
        "pause",
        "resume",
        "rollback",
        "freeze",
        "unfreeze",
        "history",
        "health",
        "explain",
        "report",
        "doctor",
        "apply",
        "export",
        "delete",
        "completions",
    ];
    for command in commands {
        let help = rollout_cli(&[command, "--help"], &[]).await;
        assert_eq!(help.code, 0, "{help:?}");
        assert!(
            help.stdout.contains("Example") && help.stdout.contains(&format!("rollout {command}")),
            "{command}: {}",
            help.stdout
        );
    }
}

/// Runs `script` in `shell` with `$ROLLOUT` set to the binary; `None` when the shell is not installed.
fn in_shell(shell: &str, script: &str) -> Option<std::process::Output> {
    let output =
        std::process::Command::new(shell).args(["-c", script]).env("ROLLOUT", env!("CARGO_BIN_EXE_rollout")).output();
    match output {
        Ok(output) => Some(output),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("note: {shell} is not installed; its completion script is not tested");
            None
        }
        Err(e) => panic!("{shell}: {e}"),
    }
}

#[test]
fn the_completion_scripts_load_in_their_shells() {
    let bash =
        in_shell("bash", r#"source <("$ROLLOUT" completions bash) && complete -p rollout"#).expect("bash is installed");
    assert!(bash.status.success(), "{bash:?}");
    let registered = String::from_utf8_lossy(&bash.stdout);
    assert!(registered.contains(" -F _rollout ") && registered.trim_end().ends_with(" rollout"), "{registered}");
    // Completing `rollout st` offers the commands that start so.
    let offered = in_shell(
        "bash",
        r#"source <("$ROLLOUT" completions bash) && COMP_WORDS=(rollout st) COMP_CWORD=1 && _rollout rollout st rollout && echo "${COMPREPLY[@]}""#,
    )
    .expect("bash");
    let words = String::from_utf8_lossy(&offered.stdout);
    assert!(
        words.split_whitespace().any(|w| w == "status") && words.split_whitespace().any(|w| w == "start"),
        "{offered:?}"
    );

    if let Some(zsh) = in_shell(
        "zsh",
        r#"autoload -U compinit && compinit -u -D && source <("$ROLLOUT" completions zsh) && (( $+functions[_rollout] ))"#,
    ) {
        assert!(zsh.status.success(), "{zsh:?}");
    }
    if let Some(fish) = in_shell("fish", r#""$ROLLOUT" completions fish | source; and complete -C'rollout st'"#) {
        let words = String::from_utf8_lossy(&fish.stdout);
        assert!(fish.status.success() && words.contains("status"), "{fish:?}");
    }
    let pwsh = std::process::Command::new(env!("CARGO_BIN_EXE_rollout")).args(["completions", "powershell"]).output();
    let pwsh = pwsh.expect("runs");
    assert!(String::from_utf8_lossy(&pwsh.stdout).contains("Register-ArgumentCompleter"), "{pwsh:?}");
}

#[tokio::test]
async fn status_watch_shows_a_change_made_through_the_api_within_a_second_and_stops_on_ctrl_c() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let app = TestApp::in_memory().spawn().await;
    app.create_flag("checkout", json!({})).await;
    app.create_flag("search", json!({})).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollout"))
        .args(["status", "checkout", "--watch"])
        .env("ROLLOUT_SERVER", app.base())
        .env("ROLLOUT_TOKEN", ADMIN)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the rollout binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next_row = async || -> Vec<String> {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .expect("a line within 10 s")
                .expect("stdout")
                .expect("the watch still runs");
            if line.starts_with("checkout") {
                return line.split_whitespace().map(str::to_owned).collect();
            }
        }
    };
    assert_eq!(next_row().await[..3], ["checkout", "pending", "internal"], "the first draw");

    // Another flag's change does not redraw; this flag's does, at once.
    app.must("search", "start").await;
    let started = std::time::Instant::now();
    app.must("checkout", "start").await;
    let row = next_row().await;
    let took = started.elapsed();
    assert_eq!(row[..5], ["checkout", "running", "internal", "0%", "2"], "the redraw");
    assert!(took < Duration::from_secs(1), "the change appeared after {took:?}");
    println!("FIGURES watch: a start through the API appeared in `status --watch` after {} ms", took.as_millis());

    let pid = child.id().expect("running").to_string();
    assert!(std::process::Command::new("kill").args(["-s", "INT", &pid]).status().expect("kill(1)").success());
    let status =
        tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("exits on Ctrl-C").expect("wait");
    assert_eq!(status.code(), Some(0), "Ctrl-C ends the watch cleanly");
}
