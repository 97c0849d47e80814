//! Logs through `tracing`: JSON lines for machines or pretty text for people.

use crate::settings::LogFormat;
use tracing_subscriber::EnvFilter;

/// `RUST_LOG` filters (default `info`, with the chatty adapters' internals at `warn`).
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
