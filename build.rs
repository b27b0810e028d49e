//! Stamps the build with its commit for the `rollout_build_info` metric:
//! `ROLLOUT_BUILD_COMMIT` when set (a container build has no `.git`), else `git rev-parse`,
//! else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=ROLLOUT_BUILD_COMMIT");
    let from_env = std::env::var("ROLLOUT_BUILD_COMMIT").ok().filter(|c| !c.trim().is_empty());
    let commit = from_env.or_else(|| {
        // Built again when HEAD moves (a commit, a checkout), not on every source change.
        for path in ["HEAD", "logs/HEAD"] {
            if let Some(p) = git(&["rev-parse", "--git-path", path]) {
                println!("cargo:rerun-if-changed={p}");
            }
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    let commit = commit.unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ROLLOUT_BUILD_COMMIT={}", commit.trim());
}
