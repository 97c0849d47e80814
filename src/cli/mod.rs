//! The command line: the worker's commands and the operator's, parsed by clap.

mod import;

use clap::{Args, Parser, Subcommand};
pub use import::{ImportArgs, import};
use std::path::PathBuf;
use std::process::ExitCode;
use user_sync::ops::{brake, dlq, explain, send, status};
use user_sync::settings::Settings;

/// Keeps this backend's users in step with the central auth system's RabbitMQ events.
/// Every command reads the same environment (see README, Configuration).
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
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
        /// key column and its unique index.
        #[arg(long)]
        print_target_sql: bool,
    },
    /// Queue depths and consumers, and the table's user counts. Exit 1 if the broker or
    /// the database cannot be reached.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Inspect, replay or purge the dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Publish one well-formed event to the exchange (a smoke test after a deployment).
    Send(SendArgs),
    /// Backfill users from an export (a JSON array or JSON lines of `user` objects, each
    /// with a `timestamp` or given `--as-of`), through the worker's rules: safe to rerun,
    /// never overrides a newer event.
    Import(ImportArgs),
    /// The mass-deactivation brake: `status`, or `release` it (every replica) and move the
    /// held deactivations back to the queue to be applied.
    #[command(subcommand)]
    Brake(BrakeCommand),
    /// Why is this user missing, inactive or still active? Their row, watermarks, audit
    /// trail (newest first) and any dead letters, by email, auth id or local row id.
    Explain {
        user: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum BrakeCommand {
    Status {
        #[arg(long)]
        json: bool,
    },
    Release {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// One line per dead letter, oldest first; nothing is consumed.
    List {
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Headers and body of the dead letter at a position of `list` (hashes masked).
    Show {
        position: usize,
        #[arg(long)]
        json: bool,
    },
    /// Move dead letters back to the main queue with their attempts reset.
    Replay {
        /// Only this `x-error-kind` (permanent, retries_exhausted, email_conflict).
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Delete every dead letter.
    Purge {
        /// Required: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
pub struct SendArgs {
    /// created, updated or deleted.
    #[arg(long = "type", default_value = "created")]
    kind: String,
    #[arg(long, default_value = "smoke-test@example.com")]
    email: String,
    #[arg(long, default_value = "student")]
    role: String,
    /// Comma-separated services for `allowed_services_json`.
    #[arg(long, value_delimiter = ',', default_value = "")]
    services: Vec<String>,
    /// Auth user id (default: a new one).
    #[arg(long)]
    user_id: Option<uuid::Uuid>,
    /// Send this JSON file's body as it is instead.
    #[arg(long, conflicts_with_all = ["email", "role", "services", "user_id"])]
    file: Option<PathBuf>,
    /// Publish on the shared auth exchange (RABBITMQ_EXCHANGE), so that every service bound
    /// to it receives the event; by default only this service's queue does.
    #[arg(long)]
    to_exchange: bool,
}

pub(crate) fn fail(what: impl std::fmt::Display) -> ExitCode {
    eprintln!("user-sync: {what}");
    ExitCode::FAILURE
}

pub(crate) fn json(v: impl serde::Serialize) -> String {
    serde_json::to_string_pretty(&v).expect("serialises")
}

/// Short: Docker's HEALTHCHECK and compose kill a probe at their own timeout (3 s in the
/// Dockerfile), and a worker that cannot answer /healthz in 2 s is not healthy.
const HEALTHCHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads only `HTTP_ADDR`, so a probe never fails on a setting it does not use.
pub async fn healthcheck() -> ExitCode {
    let addr = match Settings::load_http_addr() {
        Ok(addr) => addr,
        Err(e) => return fail(e),
    };
    match user_sync::health::check(addr, HEALTHCHECK_TIMEOUT).await {
        Ok(()) => {
            println!("healthy");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("unhealthy: {e}")),
    }
}

pub async fn status(settings: &Settings, as_json: bool) -> ExitCode {
    let s = status::status(settings).await;
    if as_json {
        println!("{}", json(s.to_json()));
    } else {
        print!("{}", s.to_table());
    }
    if s.reachable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub async fn dlq(settings: &Settings, command: DlqCommand) -> ExitCode {
    match command {
        DlqCommand::List { limit, json: j } => match dlq::list(settings, limit).await {
            Ok(letters) if j => println!("{}", json(&letters)),
            Ok(letters) if letters.is_empty() => println!("the dead-letter queue is empty"),
            Ok(letters) => print!("{}", dlq::list_table(&letters)),
            Err(e) => return fail(e),
        },
        DlqCommand::Show { position, json: j } => match dlq::show(settings, position).await {
            Ok(Some(shown)) if j => println!("{}", json(&shown)),
            Ok(Some(shown)) => print!("{}", dlq::show_text(&shown)),
            Ok(None) => return fail(format!("no dead letter at position {position}")),
            Err(e) => return fail(e),
        },
        DlqCommand::Replay {
            kind,
            limit,
            json: j,
        } => match dlq::replay(settings, kind.as_deref(), limit).await {
            Ok(r) if j => println!("{}", json(&r)),
            Ok(r) => println!(
                "replayed {} dead letter(s) to the main queue; {} of other kinds left in place; {}",
                r.replayed,
                r.kept,
                r.came_back_text()
            ),
            Err(e) => return fail(e),
        },
        DlqCommand::Purge { yes: false } => {
            return fail("purge deletes every dead letter for good; add --yes");
        }
        DlqCommand::Purge { yes: true } => match dlq::purge(settings).await {
            Ok(n) => println!("purged {n} dead letter(s)"),
            Err(e) => return fail(e),
        },
    }
    ExitCode::SUCCESS
}

pub async fn send(settings: &Settings, args: SendArgs) -> ExitCode {
    let body = match &args.file {
        Some(path) => match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return fail(format!("{}: {e}", path.display())),
        },
        None => {
            let draft = send::Draft {
                kind: args.kind,
                email: args.email,
                role: args.role,
                services: args
                    .services
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect(),
                user_id: args.user_id,
            };
            match draft.body() {
                Ok(b) => b,
                Err(e) => return fail(e),
            }
        }
    };
    let to = if args.to_exchange {
        eprintln!(
            "user-sync: publishing on the shared exchange {}: every service bound to it receives this event",
            settings.rabbitmq_exchange
        );
        send::Destination::SharedExchange
    } else {
        send::Destination::OwnQueue
    };
    match send::send(settings, &body, to).await {
        Ok(key) if args.to_exchange => {
            println!("sent {key} to exchange {}", settings.rabbitmq_exchange);
            ExitCode::SUCCESS
        }
        Ok(key) => {
            println!("sent {key} to queue {} only", settings.rabbitmq_queue);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

pub async fn brake(settings: &Settings, command: BrakeCommand) -> ExitCode {
    match command {
        BrakeCommand::Status { json: j } => match brake::status(settings).await {
            Ok(s) if j => println!("{}", json(&s)),
            Ok(s) => println!(
                "brake {}; threshold {} deactivations per {} s; {} held",
                if s.engaged { "ENGAGED" } else { "not engaged" },
                s.threshold,
                s.window_s,
                s.held
            ),
            Err(e) => return fail(e),
        },
        BrakeCommand::Release { json: j } => match brake::release(settings).await {
            Ok(r) if j => println!("{}", json(&r)),
            Ok(r) => println!(
                "{}; moved {} held deactivation(s) back to the queue; {}",
                if r.was_engaged {
                    "brake released"
                } else {
                    "the brake was not engaged"
                },
                r.moved,
                match r.came_back {
                    Some(n) => format!("{n} parked again"),
                    None => "no worker consumes the queue yet".into(),
                }
            ),
            Err(e) => return fail(e),
        },
    }
    ExitCode::SUCCESS
}

pub async fn explain(settings: &Settings, user: &str, as_json: bool) -> ExitCode {
    match explain::explain(settings, user).await {
        Ok(e) if as_json => println!("{}", json(&e)),
        Ok(e) => print!("{}", e.to_text()),
        Err(e) => return fail(e),
    }
    ExitCode::SUCCESS
}
