//! The command line: the worker's commands and the operator's, parsed by clap, and what
//! each of them needs of the settings.

mod brake;
mod dlq;
pub(crate) mod exit;
mod import;
mod send;
#[cfg(test)]
mod tests;

use clap::{Args, Parser, Subcommand};
use exit::Exit;
use std::process::ExitCode;
use user_sync::ops::{explain, status};
use user_sync::settings::Settings;

pub use brake::{BrakeCommand, brake};
pub use dlq::{DlqCommand, dlq};
pub use import::{ImportArgs, import};
pub use send::{SendArgs, send};

/// `--version`: the release and the revision it was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("USER_SYNC_REVISION"),
    ")"
);

/// Keeps this backend's users in step with the central auth system's RabbitMQ events.
/// Every command reads the same environment (see README, Configuration).
#[derive(Parser)]
#[command(
    version = VERSION,
    about,
    after_help = "Exit codes: 0 done; 1 failed (unreachable, refused, runtime error); \
                  2 usage or configuration; 3 done, but some records were rejected or came \
                  straight back (import, dlq replay)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

const JSON_HELP: &str = "Print the report as JSON, for scripts";

// `--json`, the same on every command that reports. Not a doc comment: clap would make a
// flattened struct's doc the about of every command it is flattened into.
#[derive(Args, Clone, Copy)]
pub struct Report {
    #[arg(long, help = JSON_HELP)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Consume events and converge the users table (the default).
    Run,
    /// Ask the local `/healthz` (at `HTTP_ADDR`; 0.0.0.0 means 127.0.0.1): exit 0 if the
    /// worker makes progress, 1 otherwise. For the image's HEALTHCHECK.
    Healthcheck,
    /// Create the schema and apply the migrations, then exit.
    Migrate {
        /// Print, without running it, the DDL the backend adds for a `[target]` table: the
        /// key column and its unique index. Needs no database.
        #[arg(long)]
        print_target_sql: bool,
    },
    /// Queue depths and consumers, and the table's user counts (without `DATABASE_URL`,
    /// the queues only). Exit 1 if the broker, or the database when configured, cannot be
    /// reached.
    Status {
        #[command(flatten)]
        report: Report,
    },
    /// Inspect, replay or purge the dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Publish one well-formed event (a smoke test after a deployment).
    Send(SendArgs),
    /// Backfill users from an export (a JSON array or JSON lines of `user` objects, each
    /// with a `timestamp` or given `--as-of`), through the worker's rules: safe to rerun,
    /// never overrides a newer event. With `--full`, also deactivate the users it leaves out.
    Import(ImportArgs),
    /// The mass-deactivation brake: whether it holds, and releasing it.
    #[command(subcommand)]
    Brake(BrakeCommand),
    /// Why is this user missing, inactive or still active? Their row, watermarks, audit
    /// trail (newest first) and any dead letters.
    Explain {
        /// The user: an email, an auth user id (UUID) or a local row id.
        user: String,
        #[command(flatten)]
        report: Report,
    },
}

impl Command {
    /// As typed after `user-sync`: a missing setting's error names it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Run => "run",
            Command::Healthcheck => "healthcheck",
            Command::Migrate { .. } => "migrate",
            Command::Status { .. } => "status",
            Command::Dlq(_) => "dlq",
            Command::Send(_) => "send",
            Command::Import(_) => "import",
            Command::Brake(BrakeCommand::Status { .. }) => "brake status",
            Command::Brake(BrakeCommand::Release { .. }) => "brake release",
            Command::Explain { .. } => "explain",
        }
    }

    /// Whether the command cannot run without the database. `status` asks it only when
    /// it is configured; `explain` looks into the DLQ too, if the broker answers.
    pub(crate) fn needs_database(&self) -> bool {
        match self {
            Command::Run | Command::Import(_) | Command::Brake(_) | Command::Explain { .. } => true,
            Command::Migrate { print_target_sql } => !print_target_sql,
            Command::Healthcheck | Command::Status { .. } | Command::Dlq(_) | Command::Send(_) => {
                false
            }
        }
    }
}

/// The settings `command` runs with; or, having said what is wrong, the usage exit: an
/// invalid setting, or no `DATABASE_URL` for a command that needs it, stops it before it
/// does anything.
pub(crate) fn settings_for(command: &Command) -> Result<Settings, ExitCode> {
    let settings = Settings::load(command.name()).map_err(usage)?;
    if command.needs_database() {
        settings.database_url().map_err(usage)?;
    }
    Ok(settings)
}

pub(crate) fn fail(what: impl std::fmt::Display) -> ExitCode {
    eprintln!("user-sync: {what}");
    Exit::Failed.into()
}

pub(crate) fn usage(what: impl std::fmt::Display) -> ExitCode {
    eprintln!("user-sync: {what}");
    Exit::Usage.into()
}

pub(crate) fn json(v: impl serde::Serialize) -> String {
    serde_json::to_string_pretty(&v).expect("serialises")
}

/// Short: Docker's HEALTHCHECK and compose kill a probe at their own timeout (3 s in the
/// Dockerfile), and a worker that cannot answer /healthz in 2 s is not healthy.
const HEALTHCHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads only `HTTP_ADDR`, so a probe never fails on a setting it does not use. Exits 0
/// or 1 only, an invalid `HTTP_ADDR` included: Docker reserves a HEALTHCHECK's exit 2.
pub async fn healthcheck() -> ExitCode {
    let addr = match Settings::load_http_addr() {
        Ok(addr) => addr,
        Err(e) => return fail(e),
    };
    match user_sync::health::check(addr, HEALTHCHECK_TIMEOUT).await {
        Ok(()) => {
            println!("healthy");
            Exit::Done.into()
        }
        Err(e) => fail(format!("unhealthy: {e}")),
    }
}

pub async fn status(settings: &Settings, report: Report) -> ExitCode {
    let s = status::status(settings).await;
    if report.json {
        println!("{}", json(s.to_json()));
    } else {
        print!("{}", s.to_table());
    }
    if s.reachable() {
        Exit::Done.into()
    } else {
        Exit::Failed.into()
    }
}

pub async fn explain(settings: &Settings, user: &str, report: Report) -> ExitCode {
    match explain::explain(settings, user).await {
        Ok(e) if report.json => println!("{}", json(&e)),
        Ok(e) => print!("{}", e.to_text()),
        Err(e @ explain::ExplainError::Config(_)) => return usage(e),
        Err(e) => return fail(e),
    }
    Exit::Done.into()
}
