//! The Node SDK (`sdk/node`) against the real service: this side starts the service (in process,
//! or the real binary where it must die and come back) and creates the flags; node's own test
//! runner runs `sdk/node/test/wire/*.test.mjs` against it, which assert what an app would see.
//! Where the scenario needs the service or Redis to fail at a given point, the node test asks for
//! it by name through a control directory (`want-<step>`, answered `done-<step>`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{ADMIN, FAST, RedisOptions, RedisServer, ServiceProcess, TestApp};

/// Bound on one node test file, SDK start to last assertion.
const NODE_LIMIT: Duration = Duration::from_secs(180);

fn sdk_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/node"))
}

/// Installs the SDK's two dev dependencies when missing and compiles `dist/`, once per test run
/// (the tests of this module share it; the others wait for it).
fn built_sdk() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let npm = |args: &[&str]| {
            let out = Command::new("npm")
                .args(args)
                .arg("--prefix")
                .arg(sdk_dir())
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run npm (node >= 20 must be on PATH): {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "npm {args:?} failed:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        if !sdk_dir().join("node_modules/typescript").is_dir() {
            npm(&["ci", "--no-audit", "--no-fund"])?;
        }
        npm(&["run", "build"])
    });
    if let Err(e) = built {
        panic!("{e}");
    }
}

/// `node --test` on one file under `sdk/node/test/`, its output in a file (a pipe nobody reads
/// would stall it), killed if the test is dropped.
struct NodeRun {
    child: tokio::process::Child,
    control: tempfile::TempDir,
    output: PathBuf,
    file: String,
}

impl NodeRun {
    fn start(file: &str, env: &[(&str, String)]) -> NodeRun {
        built_sdk();
        let control = tempfile::tempdir().expect("tempdir");
        let output = control.path().join("node-output.txt");
        let out = std::fs::File::create(&output).expect("output file");
        let err = out.try_clone().expect("output file");
        let child = tokio::process::Command::new("node")
            .args(["--test", "--test-reporter=spec"])
            .arg(sdk_dir().join("test").join(file))
            .env("ROLLOUT_CONTROL_DIR", control.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("node must be on PATH");
        NodeRun { child, control, output, file: file.to_owned() }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits until the node test asks for `step`; panics with its output if it ended instead.
    async fn wants(&mut self, step: &str) {
        let start = Instant::now();
        let want = self.control.path().join(format!("want-{step}"));
        while !want.exists() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} ended ({status}) before asking for {step}:\n{}", self.file, self.output());
            }
            assert!(start.elapsed() < NODE_LIMIT, "{} did not ask for {step}:\n{}", self.file, self.output());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Tells the node test that `step` is done.
    fn done(&self, step: &str) {
        std::fs::write(self.control.path().join(format!("done-{step}")), b"").expect("control file");
    }

    /// Waits for node to exit and asserts that every test passed; prints its output (the figures).
    async fn passes(mut self) {
        let status = tokio::time::timeout(NODE_LIMIT, self.child.wait()).await;
        let output = self.output();
        match status {
            Ok(Ok(status)) => assert!(status.success(), "{} failed ({status}):\n{output}", self.file),
            Ok(Err(e)) => panic!("cannot wait for node: {e}"),
            Err(_) => panic!("{} did not finish within {NODE_LIMIT:?}:\n{output}", self.file),
        }
        println!("{output}");
    }
}

fn service_env(base: &str) -> Vec<(&'static str, String)> {
    vec![("ROLLOUT_URL", base.to_owned()), ("ROLLOUT_TOKEN", ADMIN.to_owned())]
}

#[tokio::test]
async fn the_node_sdk_unit_tests_pass() {
    NodeRun::start("unit", &[]).passes().await;
}

#[tokio::test]
async fn the_node_sdk_answers_like_the_service_in_every_state_and_follows_a_rollback() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    crate::sdk_rust::flags_in_every_state(&app).await;
    NodeRun::start("wire/agreement.test.mjs", &service_env(&app.base())).passes().await;
}

#[tokio::test]
async fn the_node_sdk_reports_outcomes_by_cohort_into_the_flags_window() {
    let redis = RedisServer::start();
    let app = TestApp::on(&redis).spawn().await;
    app.create_flag("f", json!({"stages": [{"name": "10%", "percent": 10}]})).await;
    app.must("f", "start").await;
    NodeRun::start("wire/reports.test.mjs", &service_env(&app.base())).passes().await;
}

#[tokio::test]
async fn the_node_sdk_polls_the_configuration_while_the_stream_is_refused() {
    let redis = RedisServer::start();
    // One stream slot: the node test takes it with a plain request, so the SDK is refused (503).
    let app = TestApp::on(&redis).settings(|s| s.max_stream_clients = 1).spawn().await;
    app.create_flag("f", json!({"stages": [{"name": "50%", "percent": 50}]})).await;
    app.must("f", "start").await;
    NodeRun::start("wire/fallback.test.mjs", &service_env(&app.base())).passes().await;
}

#[tokio::test]
async fn the_node_sdk_keeps_answering_through_a_service_restart_and_a_redis_outage() {
    let mut redis = RedisServer::start_with(RedisOptions { persistent: true, ..RedisOptions::default() });
    let mut a = ServiceProcess::spawn(&redis.url(), &[], FAST).await;
    let b = ServiceProcess::spawn(&redis.url(), &[], FAST).await;
    assert_eq!(a.admin_put("/flags/f", json!({"stages": [{"name": "50%", "percent": 50}]})).await.status, 201);
    assert_eq!(a.admin_post("/flags/f/start", json!({})).await.status, 200);
    let mut env = service_env(&a.base());
    env.push(("ROLLOUT_OTHER_URL", b.base()));
    let mut node = NodeRun::start("wire/resilience.test.mjs", &env);

    node.wants("kill-service").await;
    a.kill();
    node.done("kill-service");
    node.wants("restart-service").await;
    a.restart().await;
    node.done("restart-service");
    node.wants("stop-redis").await;
    redis.stop();
    node.done("stop-redis");
    node.wants("start-redis").await;
    redis.start_again();
    node.done("start-redis");
    node.passes().await;
    drop(a);
}
