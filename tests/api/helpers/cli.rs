//! Runs of the real `rollout` binary as a CLI, with their exit code and output.

use std::process::{Command, Stdio};

use serde_json::Value;

/// How a run of the real `rollout` binary went.
#[derive(Debug)]
pub struct CliRun {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// Stdout as JSON (for `--json`).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("JSON on stdout ({e}): {self:?}"))
    }
}

/// Runs the `rollout` binary with `args` and `env`, none of the test's own `ROLLOUT_*` variables.
/// It runs on a blocking thread, so the app in this process keeps serving meanwhile.
pub async fn rollout_cli(args: &[&str], env: &[(&str, &str)]) -> CliRun {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rollout"));
    command.args(args).stdin(Stdio::null());
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("ROLLOUT_")) {
        command.env_remove(key);
    }
    command.env("NO_COLOR", "1").envs(env.iter().copied());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the CLI thread")
        .expect("the rollout binary runs");
    CliRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
