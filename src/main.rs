mod cli;

use clap::Parser;
use cli::exit::Exit;
use cli::{Cli, Command};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;
use user_sync::StartError;
use user_sync::settings::Settings;
use user_sync::store::SetupError;

/// Set by the panic hook: a panic in any task, even one whose handle nobody awaits, makes
/// the exit non-zero, so a supervisor sees a crash rather than a clean stop.
static PANICKED: AtomicBool = AtomicBool::new(false);

fn note_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, Ordering::SeqCst);
        default(info);
    }));
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    note_panics();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(async_main())
}

/// glibc gives threads malloc arenas of their own (up to eight per core) and keeps each
/// arena's high-water mark. In the soak, RSS kept growing after the catch-up batches of a
/// database outage; with two arenas it stayed level (BENCHMARKS.md, Soak).
/// Set before the runtime starts any thread; `MALLOC_ARENA_MAX` still wins if given.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter, and no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

async fn async_main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or(Command::Run);
    // Before loading the settings: the probe needs HTTP_ADDR only.
    if let Command::Healthcheck = command {
        return cli::healthcheck().await;
    }
    let settings = match cli::settings_for(&command) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match command {
        Command::Run => run(settings).await,
        Command::Healthcheck => unreachable!("answered before the settings are loaded"),
        Command::Migrate { print_target_sql } => migrate(settings, print_target_sql).await,
        // The operator's commands print reports, not logs.
        Command::Status { report } => cli::status(&settings, report).await,
        Command::Dlq(dlq) => cli::dlq(&settings, dlq).await,
        Command::Send(args) => cli::send(&settings, args).await,
        Command::Import(args) => cli::import(&settings, args).await,
        Command::Brake(brake) => cli::brake(&settings, brake).await,
        Command::Explain { user, report } => cli::explain(&settings, &user, report).await,
    }
}

/// The worker: runs until SIGTERM/SIGINT, then finishes the batches in hand within
/// `SHUTDOWN_TIMEOUT_MS`.
async fn run(settings: Settings) -> ExitCode {
    user_sync::telemetry::init(settings.log_format);
    let drain_timeout = settings.shutdown_timeout;
    let app = match user_sync::build(settings) {
        Ok(app) => app,
        Err(e @ StartError::Config(_)) => return exit_code(Ok(Err(e))).into(),
        // A DATABASE_URL that does not parse, an HTTP_ADDR that cannot be bound: settings.
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("user-sync: {e}");
            return Exit::Usage.into();
        }
    };
    let shutdown = CancellationToken::new();
    let mut worker = tokio::spawn(user_sync::run(app, shutdown.clone()));
    let joined = tokio::select! {
        r = &mut worker => r,
        _ = shutdown_signal() => {
            tracing::info!("shutdown requested; finishing the batches in hand");
            shutdown.cancel();
            match tokio::time::timeout(drain_timeout, worker).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::error!("drain timed out; unacked deliveries return to the queue");
                    return Exit::Failed.into();
                }
            }
        }
    };
    match exit_code(joined) {
        Exit::Done if PANICKED.load(Ordering::SeqCst) => {
            tracing::error!("a task panicked");
            Exit::Failed.into()
        }
        code => code.into(),
    }
}

/// The worker task's end as an exit code: an error or a panic (a `JoinError`) is a failure.
fn exit_code(joined: Result<Result<(), StartError>, JoinError>) -> Exit {
    match joined {
        Ok(Ok(())) => Exit::Done,
        // A target table that does not fit is a configuration error: one line per problem,
        // exit 2 like any other invalid setting.
        Ok(Err(StartError::Config(problem))) => {
            tracing::error!("{problem}");
            eprintln!("user-sync: {problem}");
            Exit::Usage
        }
        Ok(Err(StartError::TargetTable(problems))) => {
            for problem in problems {
                tracing::error!("{problem}");
                eprintln!("user-sync: {problem}");
            }
            Exit::Usage
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "user-sync failed");
            Exit::Failed
        }
        Err(e) => {
            tracing::error!(error = %e, "the worker task panicked or was cancelled");
            Exit::Failed
        }
    }
}

/// For an init container or a deploy step: the worker migrates by itself too.
async fn migrate(settings: Settings, print_target_sql: bool) -> ExitCode {
    if print_target_sql {
        let Some(target) = &settings.target_table else {
            return cli::usage("no [target] section in the settings file");
        };
        print!("{}", user_sync::store::target_table_ddl(target));
        return Exit::Done.into();
    }
    user_sync::telemetry::init(settings.log_format);
    let migrated = match user_sync::store::Store::new(&settings) {
        Ok(store) => store.migrate_and_claim().await,
        Err(e) => Err(e.into()),
    };
    match migrated {
        Ok(()) => {
            tracing::info!(schema = %settings.database_schema, "migrations applied");
            Exit::Done.into()
        }
        Err(SetupError::Config(problem)) => {
            tracing::error!("{problem}");
            eprintln!("user-sync: {problem}");
            Exit::Usage.into()
        }
        Err(e) => {
            tracing::error!(error = %e, "migrations failed");
            Exit::Failed.into()
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicked_worker_task_is_a_failure_exit() {
        let panicked = tokio::spawn(async { panic!("boom") }).await;
        assert_eq!(exit_code(panicked.map(|()| Ok(()))), Exit::Failed);
        assert_eq!(exit_code(Ok(Ok(()))), Exit::Done);
        let config = StartError::Config("a pooler in transaction mode".into());
        assert_eq!(exit_code(Ok(Err(config))), Exit::Usage);
    }
}
