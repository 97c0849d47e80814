//! Typed settings from defaults, an optional TOML file and the environment
//! (docs/contract.md#settings).
//!
//! Every value is read as text and parsed here, so that an error names the environment
//! variable an operator has to fix, in one line.

mod addresses;
mod defaults;
mod flow;
mod layered;
mod names;
mod source;
mod tls;
mod unknown;

pub use addresses::BrokerAddress;
pub use tls::{BrokerTls, ClientFiles, PemFile};

use crate::redact::mask_url;
use config::{Config, Environment, File, FileFormat};
use defaults::{default, defaults};
use layered::Layered;
use names::{named, schema_name};
use secrecy::{ExposeSecret, SecretString};
use source::Source;
use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    Quorum,
    Classic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

const QUEUE_TYPES: &[(&str, QueueType)] = &[
    ("quorum", QueueType::Quorum),
    ("classic", QueueType::Classic),
];
const LOG_FORMATS: &[(&str, LogFormat)] =
    &[("json", LogFormat::Json), ("pretty", LogFormat::Pretty)];

#[derive(Clone)]
pub struct Settings {
    pub rabbitmq_url: SecretString,
    pub rabbitmq_exchange: String,
    pub rabbitmq_queue: String,
    pub rabbitmq_queue_type: QueueType,
    /// For `amqps://`: the CA to trust instead of the system's roots, the client
    /// certificate to present.
    pub rabbitmq_tls: BrokerTls,
    /// Cluster nodes tried in turn, with the URL's credentials, vhost and TLS (its host is
    /// then ignored); empty: the URL's host alone.
    pub rabbitmq_addresses: Vec<BrokerAddress>,
    /// AMQP heartbeat interval, seconds: how fast a vanished broker is noticed.
    pub rabbitmq_heartbeat_secs: u16,
    pub service_name: String,
    /// Only the commands that touch the database need it: read it through `database_url()`.
    database_url: Option<SecretString>,
    /// The command these settings were loaded for, named when one it needs is missing.
    command: &'static str,
    pub database_schema: String,
    pub database_max_connections: u32,
    /// Batches in flight at once: while one commits, the next is decoded and applied.
    pub pipeline_depth: usize,
    pub all_access_roles: Vec<String>,
    pub prefetch: u16,
    pub batch_size: usize,
    pub batch_max_wait: Duration,
    pub retry_delays: Vec<Duration>,
    pub max_attempts: u32,
    pub max_body_bytes: usize,
    /// Bytes of bodies the prefetch window may hold: it is sized to fit (see `worker::window`).
    pub max_held_bytes: usize,
    /// How far ahead of our clock an event's timestamp may be before it is rejected.
    pub max_future_skew: Duration,
    pub http_addr: SocketAddr,
    /// `/healthz` fails once the worker's loops have not ticked the watchdog for this long.
    pub health_stall: Duration,
    pub log_format: LogFormat,
    pub shutdown_timeout: Duration,
    /// Deactivations allowed per window before the brake holds the rest; 0: no brake.
    pub deactivation_brake: u32,
    pub deactivation_brake_window: Duration,
    /// Days the audit trail keeps; 0: no trail.
    pub audit_retention_days: u32,
    /// Emails appear in logs as they are only when true; masked (`a***@example.com`) otherwise.
    pub log_pii: bool,
    /// HMAC-SHA256 keys; when any is set, every message must carry a valid `x-signature`.
    pub event_signing_keys: Vec<SecretString>,
    /// A backend's own table to converge instead of `{DATABASE_SCHEMA}.users`: the
    /// settings file's `[target]` section.
    pub target_table: Option<crate::target_table::TargetTable>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {problem}")]
pub struct SettingsError {
    /// The variable to fix (owned only for a key read from `CONFIG_FILE` by name).
    pub var: Cow<'static, str>,
    pub problem: String,
}

fn err(var: impl Into<Cow<'static, str>>, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        var: var.into(),
        problem: problem.into(),
    }
}

impl Settings {
    /// Reads `.env` (if present), then `CONFIG_FILE` (default `user-sync.toml`, optional),
    /// then the process environment, which wins. `command` (`run`, `dlq`, ...) is named
    /// in the error of a setting it needs that is missing.
    pub fn load(command: &'static str) -> Result<Self, SettingsError> {
        let _ = dotenvy::dotenv();
        let file = std::env::var("CONFIG_FILE").unwrap_or_else(|_| "user-sync.toml".into());
        unknown::check_file(&file)?;
        let mut builder = Config::builder()
            .add_source(File::new(&file, FileFormat::Toml).required(false))
            .add_source(Environment::default());
        for (key, value) in defaults() {
            builder = builder.set_default(key, value).expect("static default");
        }
        let cfg = builder
            .build()
            .map_err(|e| err("CONFIG_FILE", e.to_string()))?;
        let values = Layered::new(&cfg);
        let mut settings = values.finish(Self::from_lookup(|key| values.get(key)))?;
        settings.target_table = target_table(&cfg)?;
        settings.command = command;
        Ok(settings)
    }

    /// `DATABASE_URL`, or the configuration error that names the command needing it.
    pub fn database_url(&self) -> Result<&SecretString, SettingsError> {
        self.database_url.as_ref().ok_or_else(|| {
            let problem = format!("is required by `user-sync {}`", self.command);
            err("DATABASE_URL", problem)
        })
    }

    /// Only `HTTP_ADDR`, from the same sources as `load`: `user-sync healthcheck` must not
    /// fail because a setting it does not use is missing or invalid.
    pub fn load_http_addr() -> Result<SocketAddr, SettingsError> {
        let _ = dotenvy::dotenv();
        let file = std::env::var("CONFIG_FILE").unwrap_or_else(|_| "user-sync.toml".into());
        let cfg = Config::builder()
            .add_source(File::new(&file, FileFormat::Toml).required(false))
            .add_source(Environment::default())
            .build()
            .map_err(|e| err("CONFIG_FILE", e.to_string()))?;
        // The source falls back to the defaults table by itself.
        let values = Layered::new(&cfg);
        values.finish(Source::new(|key| values.get(key)).parsed("HTTP_ADDR", "host:port"))
    }

    /// Builds settings from any key lookup (lower-case keys), for the worker (`run`); used
    /// by `load` and by tests.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let src = Source::new(get);
        // Of several mistakes the first read is reported, so the order below (the struct's
        // fields included: they are evaluated as written) is kept as it always was.
        let service_name = named("SERVICE_NAME", src.string("SERVICE_NAME")?.to_lowercase())?;
        let rabbitmq_exchange = named("RABBITMQ_EXCHANGE", src.string("RABBITMQ_EXCHANGE")?)?;
        let queue = src.text("RABBITMQ_QUEUE");
        let queue = queue.unwrap_or_else(|| format!("{service_name}_user_events"));
        let rabbitmq_queue = named("RABBITMQ_QUEUE", queue)?;
        let database_schema = schema_name(src.string("DATABASE_SCHEMA")?)?;
        let rabbitmq_queue_type = src.choice("RABBITMQ_QUEUE_TYPE", QUEUE_TYPES)?;
        let event_signing_keys = src.secrets("EVENT_SIGNING_KEYS", 16)?;
        let log_pii = src.flag("LOG_PII")?;
        let log_format = src.choice("LOG_FORMAT", LOG_FORMATS)?;
        let rabbitmq_url = src.url("RABBITMQ_URL", &["amqp://", "amqps://"])?;
        let rabbitmq_tls = tls::read(|var| src.text(var), rabbitmq_url.expose_secret())?;
        let database_url = src.optional_url("DATABASE_URL", &["postgres://", "postgresql://"])?;
        let all_access_roles = src.list("ALL_ACCESS_ROLES");
        let http_addr = src.parsed("HTTP_ADDR", "host:port")?;
        let retry_delays = src.delays_ms("RETRY_DELAYS_MS")?;
        let rabbitmq_addresses = addresses::parse(&src.list("RABBITMQ_ADDRESSES"))?;
        let flow = flow::read(&src)?;
        let mut settings = Settings {
            rabbitmq_url,
            rabbitmq_exchange,
            rabbitmq_queue,
            rabbitmq_queue_type,
            rabbitmq_tls,
            rabbitmq_addresses,
            // At least 2 s: one missed beat on a busy host must not drop a healthy session;
            // at most 60 s, the server's own default, past which heartbeats add nothing.
            rabbitmq_heartbeat_secs: src.number("RABBITMQ_HEARTBEAT_SECS", 2, 60)?,
            service_name,
            database_url,
            command: "run",
            database_schema,
            all_access_roles,
            retry_delays,
            http_addr,
            log_format,
            log_pii,
            event_signing_keys,
            prefetch: flow.prefetch,
            batch_size: flow.batch_size,
            database_max_connections: flow.connections,
            pipeline_depth: flow.depth,
            batch_max_wait: src.millis("BATCH_MAX_WAIT_MS")?,
            max_attempts: src.number("MAX_ATTEMPTS", 1, 1000)?,
            max_body_bytes: src.number("MAX_BODY_BYTES", 1024, 64 << 20)?,
            max_future_skew: src.secs("MAX_FUTURE_SKEW_SECS", 0, 10 * 365 * 24 * 3600)?,
            shutdown_timeout: src.millis("SHUTDOWN_TIMEOUT_MS")?,
            deactivation_brake: src.number("DEACTIVATION_BRAKE", 0, u32::MAX.into())?,
            deactivation_brake_window: src.secs("DEACTIVATION_BRAKE_WINDOW_S", 1, 7 * 24 * 3600)?,
            audit_retention_days: src.number("AUDIT_RETENTION_DAYS", 0, 36_500)?,
            // At least 2 s: waits tick once a second, so a smaller bound would flap.
            health_stall: src.secs("HEALTH_STALL_SECS", 2, 24 * 3600)?,
            target_table: None,
            max_held_bytes: 0,
        };
        settings.max_held_bytes = flow::held_bytes(&src, settings.max_body_bytes)?;
        Ok(settings)
    }
}

/// The settings file's `[target]` section, resolved; `None` when there is none.
fn target_table(cfg: &Config) -> Result<Option<crate::target_table::TargetTable>, SettingsError> {
    let spec = match cfg.get::<crate::target_table::TargetSpec>("target") {
        Ok(spec) => spec,
        Err(config::ConfigError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(err("[target]", e.to_string())),
    };
    crate::target_table::TargetTable::resolve(&spec)
        .map(Some)
        .map_err(|e| err("[target]", e.0))
}

fn shown(addresses: &[BrokerAddress]) -> Vec<String> {
    addresses.iter().map(ToString::to_string).collect()
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("rabbitmq_url", &mask_url(self.rabbitmq_url.expose_secret()))
            .field("rabbitmq_exchange", &self.rabbitmq_exchange)
            .field("rabbitmq_queue", &self.rabbitmq_queue)
            .field("rabbitmq_queue_type", &self.rabbitmq_queue_type)
            .field("rabbitmq_tls", &self.rabbitmq_tls)
            .field("rabbitmq_addresses", &shown(&self.rabbitmq_addresses))
            .field("rabbitmq_heartbeat_secs", &self.rabbitmq_heartbeat_secs)
            .field("service_name", &self.service_name)
            .field(
                "database_url",
                &self
                    .database_url
                    .as_ref()
                    .map(|u| mask_url(u.expose_secret())),
            )
            .field("database_schema", &self.database_schema)
            .field("database_max_connections", &self.database_max_connections)
            .field("pipeline_depth", &self.pipeline_depth)
            .field("prefetch", &self.prefetch)
            .field("batch_size", &self.batch_size)
            .field("batch_max_wait", &self.batch_max_wait)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_held_bytes", &self.max_held_bytes)
            .field("retry_delays", &self.retry_delays)
            .field("max_attempts", &self.max_attempts)
            .field("max_future_skew", &self.max_future_skew)
            .field("deactivation_brake", &self.deactivation_brake)
            .field("deactivation_brake_window", &self.deactivation_brake_window)
            .field("audit_retention_days", &self.audit_retention_days)
            .field("http_addr", &self.http_addr)
            .field("health_stall", &self.health_stall)
            .field("log_pii", &self.log_pii)
            .field("event_signing_keys", &self.event_signing_keys.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
