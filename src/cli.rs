//! The `rollout` command line: `serve` runs the service; the operator commands (`status [--watch]`,
//! `start`, `advance`, `pause`, `resume`, `rollback`, `history`, `health`, `explain`, `report`,
//! `doctor`, `apply`, `export`, `delete`) talk to a running one through [`crate::client`];
//! `completions` prints a shell's completion script. `cli/flags_as_code.rs` holds the files of
//! `apply`/`export` and their diff, `cli/watch.rs` the watch, `cli/output.rs` the tables.
//!
//! The operator options (`--server`, `--token`, `--timeout`, `-o`/`--json`) are accepted before
//! the command or after it, and only by the commands that use them; `serve`'s options only by
//! `serve`.
//!
//! Exit codes: 0 success; 1 the server refused the request (HTTP 4xx/5xx), `doctor` found a
//! failing check, or `apply` refused (invalid definition, a flag changed since the diff, a prune
//! not confirmed); 2 usage errors, unreadable files and requests that could not be made
//! (connection refused, timeout).

mod doctor;
pub mod flags_as_code;
mod output;
mod watch;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;
use serde_json::Value;

use crate::client::{Client, ClientError};
use crate::config::{LogFormat, ServeArgs, Settings};
use crate::util::error_chain;

#[derive(Debug, Parser)]
#[command(
    name = "rollout",
    version,
    about = "Staged feature rollouts with guard rails",
    after_help = "Examples:\n  rollout serve --redis-url redis://127.0.0.1:6379\n  rollout status --watch\n  \
                  rollout apply -f flags/ --dry-run\n  rollout rollback checkout --reason \"errors up\"\n\n\
                  Operator options (--server, --token, --timeout, -o/--json) go before or after the command; \
                  `serve` takes none of them."
)]
pub struct Cli {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(subcommand)]
    pub command: Commands,
}

fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value.to_owned()))
}

/// 1 s to 10 min, as seconds or a duration (`30s`, `2m`).
fn timeout_secs(text: &str) -> Result<u64, String> {
    let secs = crate::domain::duration::parse_secs(text)?;
    if !(1..=600).contains(&secs) { Err(format!("{secs}s is not in 1s..=10m")) } else { Ok(secs) }
}

// How the operator commands reach the service, given before the command (`rollout --server …
// status`), from the environment, or by default. (Plain comments: a doc comment here would become
// the help text of every command that flattens it.)
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Operator options")]
pub struct ConnectArgs {
    /// The service the operator commands talk to
    #[arg(long, env = "ROLLOUT_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Admin token of the operator commands (prefer the environment variable; it is never printed)
    #[arg(long, env = "ROLLOUT_TOKEN", hide_env_values = true, value_parser = secret)]
    pub token: Option<SecretString>,
    /// How long to wait for the server: seconds or a duration (`30s`, `2m`), at most 10m
    #[arg(long = "timeout", visible_alias = "timeout-secs", env = "ROLLOUT_TIMEOUT_SECS", default_value = "10",
          value_parser = timeout_secs, value_name = "DURATION")]
    pub timeout_secs: u64,
}

// The same options given after the command (`rollout status --server …`): they win over the ones
// before it, the environment and the defaults.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Operator options")]
pub struct ConnectFlags {
    /// The service to talk to [env: ROLLOUT_SERVER] [default: http://127.0.0.1:8080]
    #[arg(long)]
    pub server: Option<String>,
    /// Admin token (prefer the environment variable ROLLOUT_TOKEN; it is never printed)
    #[arg(long, value_parser = secret)]
    pub token: Option<SecretString>,
    /// How long to wait for the server: seconds or a duration (`30s`, `2m`), at most 10m
    /// [env: ROLLOUT_TIMEOUT_SECS] [default: 10]
    #[arg(long = "timeout", visible_alias = "timeout-secs", value_parser = timeout_secs, value_name = "DURATION")]
    pub timeout_secs: Option<u64>,
}

/// What the read commands print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned tables and short summaries, for people
    Table,
    /// The server's JSON, as is
    Json,
    /// The server's JSON, as YAML
    Yaml,
}

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Operator options")]
pub struct OutputArgs {
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, value_name = "FORMAT")]
    pub output: Option<Output>,
    /// Print the server's JSON (the same as `-o json`)
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
}

impl OutputArgs {
    fn format(&self) -> Option<Output> {
        self.output.or(self.json.then_some(Output::Json))
    }
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run the service
    #[command(
        after_help = "Examples:\n  rollout serve\n  rollout serve --redis-url redis://127.0.0.1:6379 --config rollout.toml\n  \
                            ROLLOUT_ADMIN_TOKENS=ann:$(openssl rand -hex 24) rollout serve --listen 0.0.0.0:8080"
    )]
    Serve(Box<ServeArgs>),
    /// Show one flag, or every flag: status, stage, percentage, time in stage, next advance
    #[command(after_help = "Examples:\n  rollout status\n  rollout status checkout -o yaml\n  \
                            rollout status checkout --watch     # redraws on every change, Ctrl-C to stop")]
    Status {
        /// Only this flag
        flag: Option<String>,
        /// Keep watching: redraw on every change (from the server's change stream) until Ctrl-C
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Start a pending flag's rollout (its first stage), now or at a time
    #[command(after_help = "Examples:\n  rollout start checkout --reason \"go live\"\n  \
                            rollout start checkout --in 12h\n  rollout start checkout --at 2026-12-01T10:00:00Z")]
    Start(StartArgs),
    /// Call off a scheduled start: the flag is pending again
    #[command(after_help = "Example:\n  rollout cancel checkout --reason \"release moved\"")]
    Cancel(TransitionArgs),
    /// Approve entering a stage that requires approval
    #[command(after_help = "Example:\n  rollout approve checkout --stage 50% --reason \"dashboards look fine\"")]
    Approve {
        flag: String,
        /// The stage to approve (the flag's next stage)
        #[arg(long)]
        stage: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Move to the next stage now, skipping the rest of the soak
    #[command(after_help = "Example:\n  rollout advance checkout --expected-version 3")]
    Advance(TransitionArgs),
    /// Hold the current percentage (automatic rollback still guards it)
    #[command(after_help = "Example:\n  rollout pause checkout --reason \"investigating latency\"")]
    Pause(TransitionArgs),
    /// Resume a paused flag, or restart a rolled-back one at its first percentage stage
    #[command(after_help = "Example:\n  rollout resume checkout --reason \"fix deployed\"")]
    Resume(TransitionArgs),
    /// 0% for everyone, at once; `--all` is the emergency stop (every running, paused and
    /// scheduled flag, one incident id)
    #[command(after_help = "Examples:\n  rollout rollback checkout --reason \"errors up\"\n  \
                            rollout rollback --all --reason \"incident 4711\"")]
    Rollback(RollbackArgs),
    /// Freeze automatic advances and starts on every replica (rollbacks still happen)
    #[command(after_help = "Example:\n  rollout freeze --reason \"holiday code freeze\"")]
    Freeze {
        #[arg(long)]
        reason: String,
    },
    /// Lift the freeze
    #[command(after_help = "Example:\n  rollout unfreeze --reason \"freeze over\"")]
    Unfreeze {
        #[arg(long)]
        reason: String,
    },
    /// A flag's audit events, newest first
    #[command(after_help = "Examples:\n  rollout history checkout --limit 20\n  rollout history checkout -o json")]
    History {
        flag: String,
        /// How many events (1–10000) [default: the server's, 100]
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: Option<u64>,
    },
    /// Guard readings of a flag's current stage and the overall verdict
    #[command(after_help = "Example:\n  rollout health checkout")]
    Health { flag: String },
    /// Why a user gets the answer they get: hashed key, bucket, percentage, allow-list
    #[command(after_help = "Example:\n  rollout explain checkout user-42")]
    Explain { flag: String, user: String },
    /// The post-launch review: stages with durations, who did what and why, breaches and rollbacks
    #[command(after_help = "Examples:\n  rollout report checkout > review.md\n  rollout report checkout --format json")]
    Report {
        flag: String,
        /// Markdown for people or JSON for tools (`-o json`/`--json` imply json, `-o yaml` the JSON as YAML)
        #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
        format: ReportFormat,
    },
    /// Audit a running service for production: store, leader, tokens, notifications, clock, plans
    #[command(after_help = "Example:\n  rollout doctor --server https://rollout.internal")]
    Doctor,
    /// Apply flag definitions from files: print each one's diff against the server, then write
    /// what changed (each write refused if the flag changed since the diff)
    #[command(after_help = "Files: TOML, YAML or JSON by extension, each flag under `flags.<name>` with the fields \
                            of PUT /flags/{flag}.\n\nExamples:\n  rollout apply -f flags.toml --dry-run\n  \
                            rollout apply -f flags/\n  rollout apply -f flags/ --prune --yes   # also delete flags not in the files")]
    Apply(ApplyArgs),
    /// Write flag definitions in the format `apply` reads (every flag, or the ones named)
    #[command(
        after_help = "Examples:\n  rollout export > flags.toml\n  rollout export -o yaml checkout search > flags.yaml"
    )]
    Export {
        /// Only these flags
        flags: Vec<String>,
        /// File format
        #[arg(short = 'o', long = "output", value_enum, default_value_t = flags_as_code::Format::Toml, value_name = "FORMAT")]
        format: flags_as_code::Format,
    },
    /// Delete a flag; its history goes, the deletion audit (`GET /deletions`) keeps who, when and why
    #[command(after_help = "Example:\n  rollout delete old-banner --reason \"launched in March\"")]
    Delete {
        flag: String,
        /// Why (recorded in the deletion audit)
        #[arg(long)]
        reason: Option<String>,
    },
    /// Print a shell completion script
    #[command(after_help = "Examples:\n  source <(rollout completions bash)\n  \
                            rollout completions zsh > \"${fpath[1]}/_rollout\"\n  \
                            rollout completions fish > ~/.config/fish/completions/rollout.fish")]
    Completions { shell: clap_complete::Shell },
}

/// `rollout apply`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// A file, or a directory whose .toml/.yaml/.yml/.json files are read
    #[arg(short = 'f', long = "filename", value_name = "FILE_OR_DIR")]
    pub path: std::path::PathBuf,
    /// Print the diff only
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete the flags the files do not declare
    #[arg(long)]
    pub prune: bool,
    /// Delete without asking (needed with --prune when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
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

/// Which option groups a command takes after its name: (connection, output).
fn takes(command: &str) -> (bool, bool) {
    match command {
        "serve" | "completions" => (false, false),
        "apply" | "export" | "delete" => (true, false),
        _ => (true, true),
    }
}

/// The command line: the derived one, with the operator options added to each operator command
/// (and only to those: `rollout serve --json` is a usage error).
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let names: Vec<String> = cmd.get_subcommands().map(|c| c.get_name().to_owned()).collect();
    for name in names {
        let (connect, output) = takes(&name);
        cmd = cmd.mut_subcommand(&name, |mut sub| {
            if connect {
                sub = ConnectFlags::augment_args(sub);
            }
            if output {
                sub = OutputArgs::augment_args(sub);
            }
            sub
        });
    }
    cmd
}

/// The operator options, as written on the command line.
const OPERATOR_OPTIONS: [&str; 7] = ["--server", "--token", "--timeout", "--timeout-secs", "-o", "--output", "--json"];

/// An operator option given to a command that does not take it (`rollout serve --json`) gets a
/// tip saying so, beside clap's `unexpected argument`.
fn explain_misplaced(mut e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    if e.kind() == ErrorKind::UnknownArgument
        && let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg)
        && let Some(option) = OPERATOR_OPTIONS.iter().find(|o| arg.split('=').next() == Some(**o))
    {
        let tip = format!(
            "{option} is an option of the operator commands (status, start, …; -o and --json of the read \
             commands only); `rollout serve` and `rollout completions` take none of them"
        );
        e.insert(ContextKind::Suggested, ContextValue::StyledStrs(vec![tip.into()]));
    }
    e
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    // Usage errors exit with clap's code 2.
    let mut cmd = command();
    let matches = cmd.clone().try_get_matches().unwrap_or_else(|e| explain_misplaced(e).exit());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let Some((name, sub)) = matches.subcommand() else {
        return ExitCode::from(2);
    };
    let (connect_ok, output_ok) = takes(name);
    let before = [
        ("server", "--server", connect_ok),
        ("token", "--token", connect_ok),
        ("timeout_secs", "--timeout", connect_ok),
        ("output", "-o/--output", output_ok),
        ("json", "--json", output_ok),
    ];
    for (id, option, taken) in before {
        if !taken && matches.value_source(id) == Some(ValueSource::CommandLine) {
            let what = if connect_ok { "an option of the read commands" } else { "an option of the operator commands" };
            cmd.error(ErrorKind::ArgumentConflict, format!("{option} is {what}; `rollout {name}` does not take it"))
                .exit();
        }
    }
    let connect = if connect_ok {
        let after = ConnectFlags::from_arg_matches(sub).unwrap_or_else(|e| e.exit());
        ConnectArgs {
            server: after.server.unwrap_or(cli.connect.server),
            token: after.token.or(cli.connect.token),
            timeout_secs: after.timeout_secs.unwrap_or(cli.connect.timeout_secs),
        }
    } else {
        cli.connect
    };
    let after = if output_ok { OutputArgs::from_arg_matches(sub).ok().and_then(|o| o.format()) } else { None };
    let output = after.or(cli.output.format()).unwrap_or(Output::Table);
    match cli.command {
        Commands::Serve(args) => serve(&args),
        Commands::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "rollout", &mut script);
            emit(&String::from_utf8_lossy(&script));
            ExitCode::SUCCESS
        }
        command => operate(&connect, output, command),
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

fn emit_yaml(value: &Value) {
    emit(&serde_norway::to_string(value).unwrap_or_default());
}

/// Prints an answer: `table` renders it for people, the other formats print the server's JSON.
fn show(output: Output, raw: &Value, table: impl FnOnce() -> String) {
    match output {
        Output::Table => emit(&table()),
        Output::Json => emit_json(raw),
        Output::Yaml => emit_yaml(raw),
    }
}

fn operate(connect: &ConnectArgs, output: Output, command: Commands) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        let client = Client::new(&connect.server, connect.token.clone(), Duration::from_secs(connect.timeout_secs))?;
        run(&client, output, command).await
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(client: &Client, output: Output, command: Commands) -> Result<ExitCode, ClientError> {
    match command {
        // Dispatched before: they never talk to a server.
        Commands::Serve(_) | Commands::Completions { .. } => {}
        Commands::Status { flag, watch: true } => {
            let draw = || status_text(client, output, flag.as_deref());
            watch::watch(client, flag.as_deref(), draw).await?;
        }
        Commands::Status { flag, watch: false } => emit(&status_text(client, output, flag.as_deref()).await?),
        Commands::Start(args) => start(client, output, args).await?,
        Commands::Cancel(args) => transition(client, output, "cancel", args).await?,
        Commands::Approve { flag, stage, reason } => {
            let state = client.approve(&flag, &stage, reason.as_deref()).await?;
            show_state(output, state);
        }
        Commands::Rollback(RollbackArgs { all: true, reason, .. }) => {
            let stopped = client.post_reason("rollback-all", reason.as_deref().unwrap_or_default()).await?;
            show(output, &stopped.raw, || output::stopped(&stopped.data));
        }
        Commands::Rollback(RollbackArgs { flag, reason, expected_version, .. }) => {
            let args = TransitionArgs { flag: flag.unwrap_or_default(), reason, expected_version };
            transition(client, output, "rollback", args).await?
        }
        Commands::Freeze { reason } => freeze(client, output, "freeze", &reason).await?,
        Commands::Unfreeze { reason } => freeze(client, output, "unfreeze", &reason).await?,
        Commands::Advance(args) => transition(client, output, "advance", args).await?,
        Commands::Pause(args) => transition(client, output, "pause", args).await?,
        Commands::Resume(args) => transition(client, output, "resume", args).await?,
        Commands::History { flag, limit } => {
            let history = client.history(&flag, limit).await?;
            show(output, &history.raw, || output::history_table(&history.data.events));
        }
        Commands::Health { flag } => {
            let health = client.health(&flag).await?;
            show(output, &health.raw, || output::health_table(&health.data));
        }
        Commands::Explain { flag, user } => {
            let explained = client.explain(&flag, &user).await?;
            show(output, &explained.raw, || output::explanation(&explained.data));
        }
        Commands::Report { flag, format } => match (output, format) {
            (Output::Table, ReportFormat::Md) => emit(&client.report_markdown(&flag).await?),
            (Output::Yaml, _) => emit_yaml(&client.report_json(&flag).await?),
            _ => emit_json(&client.report_json(&flag).await?),
        },
        Commands::Doctor => {
            let checks = doctor::run(client).await;
            show(output, &doctor::to_json(&checks), || doctor::render(&checks));
            if !doctor::passed(&checks) {
                return Ok(ExitCode::from(1));
            }
        }
        Commands::Apply(args) => return apply(client, &args).await,
        Commands::Export { flags, format } => return export(client, &flags, format).await,
        Commands::Delete { flag, reason } => {
            client.delete(&flag, reason.as_deref()).await?;
            emit(&format!("deleted {flag}\n"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `rollout status` prints: one flag or all, in `output`.
async fn status_text(client: &Client, output: Output, flag: Option<&str>) -> Result<String, ClientError> {
    let (raw, table) = match flag {
        None => {
            let flags = client.flags().await?;
            let table = output::status_table(&flags.data.flags);
            (flags.raw, table)
        }
        Some(flag) => {
            let state = client.flag(flag).await?;
            let table = output::status_table(&[state.data]);
            (state.raw, table)
        }
    };
    Ok(match output {
        Output::Table => table,
        Output::Json => format!("{}\n", serde_json::to_string_pretty(&raw).unwrap_or_default()),
        Output::Yaml => serde_norway::to_string(&raw).unwrap_or_default(),
    })
}

/// A local problem of `apply`/`export` (unreadable file, invalid definition): exit 2 when the
/// files could not be read, 1 when what they say is refused.
fn local_error(e: &flags_as_code::FileError) -> ExitCode {
    eprintln!("error: {}", error_chain(e));
    match e {
        flags_as_code::FileError::Invalid { .. } | flags_as_code::FileError::NullInToml(_) => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}

async fn apply(client: &Client, args: &ApplyArgs) -> Result<ExitCode, ClientError> {
    use flags_as_code::Plan;
    let files = match flags_as_code::load(&args.path) {
        Ok(files) => files,
        Err(e) => return Ok(local_error(&e)),
    };
    let server: std::collections::BTreeMap<_, _> =
        client.definitions().await?.flags.into_iter().map(|f| (f.name, (f.version, f.definition))).collect();
    let plans = flags_as_code::plan(&files, &server, args.prune);
    let doomed: Vec<&str> = plans.iter().filter(|(_, p)| *p == Plan::Delete).map(|(n, _)| n.as_str()).collect();
    let ask = !doomed.is_empty() && !args.yes;
    emit(&flags_as_code::render_plan(&plans, ask, args.dry_run));
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    if ask && !confirm(&doomed) {
        eprintln!(
            "error: not deleting {} flag(s) ({}): confirm on a terminal or pass --yes; nothing was applied",
            doomed.len(),
            doomed.join(", ")
        );
        return Ok(ExitCode::from(1));
    }
    let mut failed = 0;
    for (name, plan) in &plans {
        let written = match plan {
            Plan::Unchanged => continue,
            Plan::Add => client.put_definition(name, &files[name], 0).await.map(|_| ()),
            Plan::Change { version, .. } => client.put_definition(name, &files[name], *version).await.map(|_| ()),
            Plan::Delete => client.delete(name, Some("pruned by rollout apply: not in the files")).await,
        };
        match written {
            Ok(()) => {}
            Err(ClientError::Api { status: 409, code, .. }) if code == "version_conflict" => {
                failed += 1;
                eprintln!(
                    "error: {name} changed on the server since the diff; nothing written for it: run apply again"
                );
            }
            Err(e) if e.exit_code() == 2 => return Err(e),
            Err(e) => {
                failed += 1;
                eprintln!("error: {name}: {}", error_chain(&e));
            }
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Asks on the terminal; false without one.
fn confirm(doomed: &[&str]) -> bool {
    use std::io::{BufRead, IsTerminal};
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("delete {} flag(s) not in the files ({})? [y/N] ", doomed.len(), doomed.join(", "));
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes")
}

async fn export(client: &Client, names: &[String], format: flags_as_code::Format) -> Result<ExitCode, ClientError> {
    let stored = if names.is_empty() {
        client.definitions().await?.flags
    } else {
        let mut stored = Vec::with_capacity(names.len());
        for name in names {
            stored.push(client.definition(name).await?);
        }
        stored
    };
    let flags = stored.into_iter().map(|f| (f.name, f.definition)).collect();
    match flags_as_code::render(flags, format) {
        Ok(text) => emit(&text),
        Err(e) => return Ok(local_error(&e)),
    }
    Ok(ExitCode::SUCCESS)
}

async fn transition(client: &Client, output: Output, command: &str, args: TransitionArgs) -> Result<(), ClientError> {
    let state = client.transition(&args.flag, command, args.reason.as_deref(), args.expected_version).await?;
    show_state(output, state);
    Ok(())
}

fn show_state(output: Output, state: crate::client::Fetched<crate::client::FlagState>) {
    show(output, &state.raw, || output::status_table(&[state.data]))
}

async fn start(client: &Client, output: Output, args: StartArgs) -> Result<(), ClientError> {
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
    show_state(output, state);
    Ok(())
}

async fn freeze(client: &Client, output: Output, route: &str, reason: &str) -> Result<(), ClientError> {
    let answer = client.post_reason(route, reason).await?;
    show(output, &answer.raw, || output::freeze(&answer.data));
    Ok(())
}
