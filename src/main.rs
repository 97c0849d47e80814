use clap::{Parser, Subcommand};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use user_sync::settings::Settings;

/// Keeps this backend's users in step with the central auth system's RabbitMQ events.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume events and converge the users table (the default).
    Run,
    /// Create the schema and apply the migrations, then exit.
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("user-sync: {e}");
            return ExitCode::from(2);
        }
    };
    user_sync::telemetry::init(settings.log_format);
    let drain_timeout = settings.shutdown_timeout;
    let app = match user_sync::build(settings) {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Migrate => app
            .store
            .migrate()
            .await
            .map_err(user_sync::StartError::Migrate),
        Command::Run => {
            let shutdown = CancellationToken::new();
            let mut worker = tokio::spawn(user_sync::run(app, shutdown.clone()));
            tokio::select! {
                r = &mut worker => r.unwrap_or(Ok(())),
                _ = shutdown_signal() => {
                    tracing::info!("shutdown requested; finishing the batch in hand");
                    shutdown.cancel();
                    match tokio::time::timeout(drain_timeout, worker).await {
                        Ok(r) => r.unwrap_or(Ok(())),
                        Err(_) => {
                            tracing::error!("drain timed out; unacked deliveries return to the queue");
                            return ExitCode::FAILURE;
                        }
                    }
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "user-sync failed");
            ExitCode::FAILURE
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
