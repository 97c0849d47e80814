//! Logs through `tracing`: JSON lines for machines or pretty text for people.

use crate::settings::LogFormat;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt};

/// `RUST_LOG` filters (default `info`, with the chatty adapters' internals at `warn`);
/// `never_logged` then caps a few targets whatever `RUST_LOG` says.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,lapin=warn,sqlx=warn"))
        // sqlx warns of an unknown DATABASE_URL query parameter with its value: with a `&`
        // left unescaped in `password=`, that is the rest of the password.
        .add_directive(
            "sqlx_postgres::options::parse=error"
                .parse()
                .expect("static"),
        );
    // A filter of its own rather than directives added to `filter`: a RUST_LOG directive
    // on a span or a field (`lapin[io_loop]=trace`) would still enable what a target
    // directive was meant to cap.
    let registry = tracing_subscriber::registry()
        .with(never_logged())
        .with(filter);
    let stdout = fmt::layer().with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => registry.with(stdout.json().flatten_event(true)).try_init(),
        LogFormat::Pretty => registry.with(stdout).try_init(),
    };
}

/// The targets capped whatever `RUST_LOG` asks (README, Configuration).
///
/// lapin traces every frame it writes, reads or discards whole (`lapin::io_loop`,
/// `lapin::channels`, `lapin::frames`): `Connection.StartOk` carries the SASL response,
/// `\0user\0password`, printed as a list of bytes, and content frames carry the bodies, with
/// emails and password hashes. Their debug lines (heartbeats, channels made) are kept.
///
/// `lapin::returned_messages` warns of a message the broker returned (a mandatory publish
/// that found no queue) with its headers and whole body as bytes. user-sync handles the
/// return itself (`Session::publish_confirmed` fails, naming the exchange, routing key and
/// the broker's reason), so the target is off.
fn never_logged() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("lapin::io_loop", LevelFilter::DEBUG)
        .with_target("lapin::channels", LevelFilter::DEBUG)
        .with_target("lapin::frames", LevelFilter::DEBUG)
        .with_target("lapin::returned_messages", LevelFilter::OFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn frames_and_returned_messages_are_capped() {
        let t = never_logged();
        assert!(!t.would_enable("lapin::io_loop", &Level::TRACE));
        assert!(t.would_enable("lapin::io_loop", &Level::DEBUG));
        assert!(!t.would_enable("lapin::channels", &Level::TRACE));
        assert!(!t.would_enable("lapin::frames", &Level::TRACE));
        assert!(!t.would_enable("lapin::returned_messages", &Level::ERROR));
        assert!(t.would_enable("lapin::channel", &Level::TRACE));
        assert!(t.would_enable("user_sync::worker", &Level::TRACE));
    }
}
