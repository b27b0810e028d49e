//! The `rollout` command line: `serve` runs the service; the operator commands (`status`, `start`,
//! `advance`, `pause`, `resume`, `rollback`, `history`, `health`, `explain`, `report`, `doctor`)
//! talk to a running one through [`crate::client`].
//!
//! Exit codes: 0 success; 1 the server refused the request (HTTP 4xx/5xx) or `doctor` found a
//! failing check; 2 usage errors and requests that could not be made (connection refused, timeout).

mod doctor;
mod output;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use secrecy::SecretString;
use serde_json::Value;

use crate::client::{Client, ClientError};
use crate::config::{LogFormat, ServeArgs, Settings};
use crate::util::error_chain;

#[derive(Debug, Parser)]
#[command(name = "rollout", version, about = "Staged feature rollouts with guard rails")]
pub struct Cli {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: Commands,
}

fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value.to_owned()))
}

/// How the operator commands reach the service.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The service the operator commands talk to
    #[arg(long, env = "ROLLOUT_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    pub server: String,
    /// Admin token of the operator commands (prefer the environment variable; it is never printed)
    #[arg(long, env = "ROLLOUT_TOKEN", hide_env_values = true, global = true, value_parser = secret)]
    pub token: Option<SecretString>,
    /// Print the server's JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for the server before giving up
    #[arg(long, env = "ROLLOUT_TIMEOUT_SECS", default_value_t = 10, global = true,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout_secs: u64,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run the service
    Serve(Box<ServeArgs>),
    /// Show one flag, or every flag: status, stage, percentage, time in stage, next advance
    Status {
        /// Only this flag
        flag: Option<String>,
    },
    /// Start a pending flag's rollout (its first stage), now or at a time
    Start(StartArgs),
    /// Call off a scheduled start: the flag is pending again
    Cancel(TransitionArgs),
    /// Approve entering a stage that requires approval
    Approve {
        flag: String,
        /// The stage to approve (the flag's next stage)
        #[arg(long)]
        stage: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Move to the next stage now, skipping the rest of the soak
    Advance(TransitionArgs),
    /// Hold the current percentage (automatic rollback still guards it)
    Pause(TransitionArgs),
    /// Resume a paused flag, or restart a rolled-back one at its first percentage stage
    Resume(TransitionArgs),
    /// 0% for everyone, at once; `--all` is the emergency stop (every running, paused and
    /// scheduled flag, one incident id)
    Rollback(RollbackArgs),
    /// Freeze automatic advances and starts on every replica (rollbacks still happen)
    Freeze {
        #[arg(long)]
        reason: String,
    },
    /// Lift the freeze
    Unfreeze {
        #[arg(long)]
        reason: String,
    },
    /// A flag's audit events, newest first
    History {
        flag: String,
        /// How many events (1–10000) [default: the server's, 100]
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: Option<u64>,
    },
    /// Guard readings of a flag's current stage and the overall verdict
    Health { flag: String },
    /// Why a user gets the answer they get: hashed key, bucket, percentage, allow-list
    Explain { flag: String, user: String },
    /// The post-launch review: stages with durations, who did what and why, breaches and rollbacks
    Report {
        flag: String,
        /// Markdown for people or JSON for tools (--json implies json)
        #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
        format: ReportFormat,
    },
    /// Audit a running service for production: store, leader, tokens, notifications, clock, plans
    Doctor,
}

/// The comment, the expected version and the flag of a transition.
#[derive(Debug, Clone, clap::Args)]
pub struct TransitionArgs {
    pub flag: String,
    /// Why (recorded in the audit history and the notifications)
    #[arg(long)]
    pub reason: Option<String>,
    /// Refuse unless the flag is at this version (rollbacks ignore it)
    #[arg(long)]
    pub expected_version: Option<u64>,
}

/// A start now, at a time (`--at 2026-12-01T10:00:00Z`) or after a delay (`--in 12h`).
#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub transition: TransitionArgs,
    /// Start at this RFC 3339 time: the flag is `scheduled` until then
    #[arg(long, conflicts_with = "in_")]
    pub at: Option<String>,
    /// Start after this long (`90s`, `5m`, `12h`)
    #[arg(long = "in", id = "in_", value_parser = humantime::parse_duration)]
    pub in_: Option<std::time::Duration>,
}

/// One flag, or `--all` of them.
#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub flag: Option<String>,
    /// Every running, paused and scheduled flag (needs --reason)
    #[arg(long, requires = "reason")]
    pub all: bool,
    #[arg(long)]
    pub reason: Option<String>,
    #[arg(long)]
    pub expected_version: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Md,
    Json,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    // Usage errors exit with clap's code 2.
    let Cli { connect, command } = Cli::parse();
    match command {
        Commands::Serve(args) => serve(&args),
        command => operate(&connect, command),
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let settings = match Settings::load(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            return ExitCode::from(2);
        }
    };
    init_tracing(settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::server::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "exiting");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn emit_json(value: &Value) {
    emit(&format!("{}\n", serde_json::to_string_pretty(value).unwrap_or_default()));
}

fn operate(connect: &ConnectArgs, command: Commands) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        let client = Client::new(&connect.server, connect.token.clone(), Duration::from_secs(connect.timeout_secs))?;
        run(&client, connect.json, command).await
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(client: &Client, json: bool, command: Commands) -> Result<ExitCode, ClientError> {
    match command {
        // Dispatched before: `serve` never talks to a server.
        Commands::Serve(_) => {}
        Commands::Status { flag: None } => {
            let flags = client.flags().await?;
            if json { emit_json(&flags.raw) } else { emit(&output::status_table(&flags.data.flags)) }
        }
        Commands::Status { flag: Some(flag) } => {
            let state = client.flag(&flag).await?;
            if json { emit_json(&state.raw) } else { emit(&output::status_table(&[state.data])) }
        }
        Commands::Start(args) => start(client, json, args).await?,
        Commands::Cancel(args) => transition(client, json, "cancel", args).await?,
        Commands::Approve { flag, stage, reason } => {
            let state = client.approve(&flag, &stage, reason.as_deref()).await?;
            show_state(json, state);
        }
        Commands::Rollback(RollbackArgs { all: true, reason, .. }) => {
            let stopped = client.post_reason("rollback-all", reason.as_deref().unwrap_or_default()).await?;
            if json { emit_json(&stopped.raw) } else { emit(&output::stopped(&stopped.data)) }
        }
        Commands::Rollback(RollbackArgs { flag, reason, expected_version, .. }) => {
            let args = TransitionArgs { flag: flag.unwrap_or_default(), reason, expected_version };
            transition(client, json, "rollback", args).await?
        }
        Commands::Freeze { reason } => freeze(client, json, "freeze", &reason).await?,
        Commands::Unfreeze { reason } => freeze(client, json, "unfreeze", &reason).await?,
        Commands::Advance(args) => transition(client, json, "advance", args).await?,
        Commands::Pause(args) => transition(client, json, "pause", args).await?,
        Commands::Resume(args) => transition(client, json, "resume", args).await?,
        Commands::History { flag, limit } => {
            let history = client.history(&flag, limit).await?;
            if json { emit_json(&history.raw) } else { emit(&output::history_table(&history.data.events)) }
        }
        Commands::Health { flag } => {
            let health = client.health(&flag).await?;
            if json { emit_json(&health.raw) } else { emit(&output::health_table(&health.data)) }
        }
        Commands::Explain { flag, user } => {
            let explained = client.explain(&flag, &user).await?;
            if json { emit_json(&explained.raw) } else { emit(&output::explanation(&explained.data)) }
        }
        Commands::Report { flag, format } => {
            if json || format == ReportFormat::Json {
                emit_json(&client.report_json(&flag).await?);
            } else {
                emit(&client.report_markdown(&flag).await?);
            }
        }
        Commands::Doctor => {
            let checks = doctor::run(client).await;
            if json {
                emit_json(&doctor::to_json(&checks))
            } else {
                emit(&doctor::render(&checks))
            }
            if !doctor::passed(&checks) {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn transition(client: &Client, json: bool, command: &str, args: TransitionArgs) -> Result<(), ClientError> {
    let state = client.transition(&args.flag, command, args.reason.as_deref(), args.expected_version).await?;
    show_state(json, state);
    Ok(())
}

fn show_state(json: bool, state: crate::client::Fetched<crate::client::FlagState>) {
    if json { emit_json(&state.raw) } else { emit(&output::status_table(&[state.data])) }
}

async fn start(client: &Client, json: bool, args: StartArgs) -> Result<(), ClientError> {
    let at = match (args.at, args.in_) {
        (Some(at), _) => Some(at),
        (None, Some(delay)) => {
            let delay = jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::MAX);
            Some(jiff::Timestamp::now().checked_add(delay).unwrap_or(jiff::Timestamp::MAX).to_string())
        }
        (None, None) => None,
    };
    let t = &args.transition;
    let state = client.start(&t.flag, t.reason.as_deref(), t.expected_version, at.as_deref()).await?;
    show_state(json, state);
    Ok(())
}

async fn freeze(client: &Client, json: bool, route: &str, reason: &str) -> Result<(), ClientError> {
    let answer = client.post_reason(route, reason).await?;
    if json {
        emit_json(&answer.raw)
    } else {
        emit(&output::freeze(&answer.data))
    }
    Ok(())
}
