//! Logs through `tracing`: JSON lines for machines or pretty text for people.

use crate::settings::LogFormat;
use tracing_subscriber::EnvFilter;

/// `RUST_LOG` filters (default `info`, with the chatty adapters' internals at `warn`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,lapin=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
