//! `user-sync send`: its arguments, and where it says it published.

use super::exit::Exit;
use super::fail;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use user_sync::event::EventKind;
use user_sync::ops::send;
use user_sync::settings::Settings;

#[derive(Args)]
pub struct SendArgs {
    /// The event's type (`user.` may be written before it).
    #[arg(long = "type", value_name = "TYPE", value_enum, default_value_t = EventKind::Created)]
    kind: EventKind,
    /// The user's email.
    #[arg(long, default_value = "smoke-test@example.com")]
    email: String,
    /// The user's role (`ALL_ACCESS_ROLES` belong to every service).
    #[arg(long, default_value = "student")]
    role: String,
    /// Comma-separated services for `allowed_services_json`.
    #[arg(long, value_delimiter = ',', default_value = "")]
    services: Vec<String>,
    /// Auth user id (default: a new one).
    #[arg(long)]
    user_id: Option<uuid::Uuid>,
    /// Send this JSON file's body as it is instead.
    #[arg(long, conflicts_with_all = ["kind", "email", "role", "services", "user_id"])]
    file: Option<PathBuf>,
    /// Publish on the shared auth exchange (RABBITMQ_EXCHANGE), so that every service bound
    /// to it receives the event; by default only this service's queue does.
    #[arg(long)]
    to_exchange: bool,
}

pub async fn send(settings: &Settings, args: SendArgs) -> ExitCode {
    let body = match &args.file {
        Some(path) => match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return fail(format!("{}: {e}", path.display())),
        },
        None => send::Draft {
            kind: args.kind,
            email: args.email,
            role: args.role,
            services: args
                .services
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect(),
            user_id: args.user_id,
        }
        .body(),
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
        }
        Ok(key) => println!("sent {key} to queue {} only", settings.rabbitmq_queue),
        Err(e) => return fail(e),
    }
    Exit::Done.into()
}
