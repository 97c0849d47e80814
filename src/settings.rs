//! Typed settings from defaults, an optional TOML file and the environment (SPEC section 8).
//!
//! Every value is read as text and parsed here, so that an error names the environment
//! variable an operator has to fix, in one line.

use crate::redact::mask_url;
use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
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

#[derive(Clone)]
pub struct Settings {
    pub rabbitmq_url: SecretString,
    pub rabbitmq_exchange: String,
    pub rabbitmq_queue: String,
    pub rabbitmq_queue_type: QueueType,
    /// PEM file of the CA that signed the broker's certificate (`amqps://`), instead of
    /// the system's roots.
    pub rabbitmq_ca_file: Option<std::path::PathBuf>,
    pub service_name: String,
    pub database_url: SecretString,
    pub database_schema: String,
    pub database_max_connections: u32,
    pub all_access_roles: Vec<String>,
    pub prefetch: u16,
    pub batch_size: usize,
    pub batch_max_wait: Duration,
    pub retry_delays: Vec<Duration>,
    pub max_attempts: u32,
    pub max_body_bytes: usize,
    /// How far ahead of our clock an event's timestamp may be before it is rejected.
    pub max_future_skew: Duration,
    pub http_addr: SocketAddr,
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
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {problem}")]
pub struct SettingsError {
    pub var: &'static str,
    pub problem: String,
}

fn err(var: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        var,
        problem: problem.into(),
    }
}

// Defaults for the throughput knobs, chosen with `DRAIN_SWEEP=1 cargo bench --bench drain`
// (BENCHMARKS.md; 100 000 events, one run, 2 cores shared with the broker and Postgres).
const DEFAULTS: &[(&str, &str)] = &[
    ("rabbitmq_url", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    ("rabbitmq_exchange", "user_events"),
    ("rabbitmq_queue_type", "quorum"),
    ("database_schema", "user_sync"),
    // One batch is in flight at a time, so one connection applies; the second serves
    // `/readyz` probes without queueing behind a batch. More changed nothing measured.
    ("database_max_connections", "2"),
    ("all_access_roles", "teacher,curator,admin"),
    // Twice the batch, so the next batch is already delivered while one commits.
    ("prefetch", "2000"),
    // Drain rate by batch size: 100: 16 046/s, 250: 16 692/s, 500: 16 410/s, 1000:
    // 21 412/s, 2000: 24 052/s. Past 1000 the gain shrinks while transactions (row
    // locks held, work redone when a batch is split) and memory (23 -> 27 MiB) grow.
    ("batch_size", "1000"),
    // Bounds the wait only while deliveries trickle in: a batch is flushed as soon as no
    // further delivery is ready, so light load waits for nothing (p99 2.4 ms at 200/s).
    ("batch_max_wait_ms", "20"),
    ("retry_delays_ms", "1000,10000,60000"),
    ("max_attempts", "5"),
    ("max_body_bytes", "262144"),
    // Generous for any clock drift; short enough that a mistyped year is refused.
    ("max_future_skew_secs", "86400"),
    ("http_addr", "0.0.0.0:8080"),
    ("log_format", "json"),
    ("log_pii", "false"),
    ("shutdown_timeout_ms", "10000"),
    ("deactivation_brake", "500"),
    ("deactivation_brake_window_s", "300"),
    ("audit_retention_days", "30"),
];

impl Settings {
    /// Reads `.env` (if present), then `CONFIG_FILE` (default `user-sync.toml`, optional),
    /// then the process environment, which wins.
    pub fn load() -> Result<Self, SettingsError> {
        let _ = dotenvy::dotenv();
        let file = std::env::var("CONFIG_FILE").unwrap_or_else(|_| "user-sync.toml".into());
        let mut builder = Config::builder()
            .add_source(File::new(&file, FileFormat::Toml).required(false))
            .add_source(Environment::default());
        for (key, value) in DEFAULTS {
            builder = builder.set_default(*key, *value).expect("static default");
        }
        let cfg = builder
            .build()
            .map_err(|e| err("CONFIG_FILE", e.to_string()))?;
        Self::from_lookup(|key| cfg.get_string(key).ok())
    }

    /// Builds settings from any key lookup (lower-case keys); used by `load` and by tests.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let text = |key: &str| {
            get(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .or_else(|| DEFAULTS.iter().find(|d| d.0 == key).map(|d| d.1.into()))
        };
        let required =
            |key: &str, var: &'static str| text(key).ok_or_else(|| err(var, "is required"));
        let number = |key: &str, var: &'static str| -> Result<u64, SettingsError> {
            let raw = required(key, var)?;
            raw.parse::<u64>()
                .map_err(|_| err(var, format!("{raw:?} is not a whole number")))
        };

        let service_name = required("service_name", "SERVICE_NAME")?.to_lowercase();
        check_name("SERVICE_NAME", &service_name)?;
        let rabbitmq_exchange = required("rabbitmq_exchange", "RABBITMQ_EXCHANGE")?;
        check_name("RABBITMQ_EXCHANGE", &rabbitmq_exchange)?;
        let rabbitmq_queue =
            text("rabbitmq_queue").unwrap_or_else(|| format!("{service_name}_user_events"));
        check_name("RABBITMQ_QUEUE", &rabbitmq_queue)?;
        let database_schema = required("database_schema", "DATABASE_SCHEMA")?;
        check_schema(&database_schema)?;

        let rabbitmq_queue_type = match required("rabbitmq_queue_type", "RABBITMQ_QUEUE_TYPE")?
            .to_lowercase()
            .as_str()
        {
            "quorum" => QueueType::Quorum,
            "classic" => QueueType::Classic,
            other => {
                return Err(err(
                    "RABBITMQ_QUEUE_TYPE",
                    format!("{other:?} is not quorum or classic"),
                ));
            }
        };
        let event_signing_keys: Vec<SecretString> = text("event_signing_keys")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| SecretString::from(k.to_string()))
            .collect();
        if event_signing_keys
            .iter()
            .any(|k| k.expose_secret().len() < 16)
        {
            return Err(err(
                "EVENT_SIGNING_KEYS",
                "each key needs at least 16 characters",
            ));
        }
        let log_pii = match required("log_pii", "LOG_PII")?.to_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            other => return Err(err("LOG_PII", format!("{other:?} is not true or false"))),
        };
        let log_format = match required("log_format", "LOG_FORMAT")?
            .to_lowercase()
            .as_str()
        {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                return Err(err(
                    "LOG_FORMAT",
                    format!("{other:?} is not json or pretty"),
                ));
            }
        };
        let rabbitmq_url = required("rabbitmq_url", "RABBITMQ_URL")?;
        if !(rabbitmq_url.starts_with("amqp://") || rabbitmq_url.starts_with("amqps://")) {
            return Err(err("RABBITMQ_URL", "must start with amqp:// or amqps://"));
        }
        let database_url = required("database_url", "DATABASE_URL")?;
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(err(
                "DATABASE_URL",
                "must start with postgres:// or postgresql://",
            ));
        }
        let all_access_roles = required("all_access_roles", "ALL_ACCESS_ROLES")?
            .split(',')
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect();
        let http_addr = required("http_addr", "HTTP_ADDR")?;
        let http_addr = http_addr
            .parse()
            .map_err(|_| err("HTTP_ADDR", format!("{http_addr:?} is not host:port")))?;
        let retry_delays = required("retry_delays_ms", "RETRY_DELAYS_MS")?
            .split(',')
            .map(|d| d.trim().parse::<u64>().map(Duration::from_millis))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| err("RETRY_DELAYS_MS", "must be comma-separated milliseconds"))?;
        if retry_delays.is_empty() || retry_delays.iter().any(Duration::is_zero) {
            return Err(err(
                "RETRY_DELAYS_MS",
                "needs at least one delay, none zero",
            ));
        }

        let prefetch = in_range(number("prefetch", "PREFETCH")?, 1, 65_535, "PREFETCH")? as u16;
        let batch_size = in_range(number("batch_size", "BATCH_SIZE")?, 1, 10_000, "BATCH_SIZE")?;
        Ok(Settings {
            rabbitmq_url: rabbitmq_url.into(),
            rabbitmq_exchange,
            rabbitmq_queue,
            rabbitmq_queue_type,
            rabbitmq_ca_file: text("rabbitmq_ca_file").map(std::path::PathBuf::from),
            service_name,
            database_url: database_url.into(),
            database_schema,
            database_max_connections: in_range(
                number("database_max_connections", "DATABASE_MAX_CONNECTIONS")?,
                1,
                100,
                "DATABASE_MAX_CONNECTIONS",
            )? as u32,
            all_access_roles,
            prefetch,
            batch_size: batch_size as usize,
            batch_max_wait: Duration::from_millis(number(
                "batch_max_wait_ms",
                "BATCH_MAX_WAIT_MS",
            )?),
            retry_delays,
            max_attempts: in_range(
                number("max_attempts", "MAX_ATTEMPTS")?,
                1,
                1000,
                "MAX_ATTEMPTS",
            )? as u32,
            max_body_bytes: in_range(
                number("max_body_bytes", "MAX_BODY_BYTES")?,
                1024,
                64 << 20,
                "MAX_BODY_BYTES",
            )? as usize,
            max_future_skew: Duration::from_secs(in_range(
                number("max_future_skew_secs", "MAX_FUTURE_SKEW_SECS")?,
                0,
                10 * 365 * 24 * 3600,
                "MAX_FUTURE_SKEW_SECS",
            )?),
            http_addr,
            log_format,
            shutdown_timeout: Duration::from_millis(number(
                "shutdown_timeout_ms",
                "SHUTDOWN_TIMEOUT_MS",
            )?),
            deactivation_brake: in_range(
                number("deactivation_brake", "DEACTIVATION_BRAKE")?,
                0,
                u32::MAX.into(),
                "DEACTIVATION_BRAKE",
            )? as u32,
            deactivation_brake_window: Duration::from_secs(in_range(
                number("deactivation_brake_window_s", "DEACTIVATION_BRAKE_WINDOW_S")?,
                1,
                7 * 24 * 3600,
                "DEACTIVATION_BRAKE_WINDOW_S",
            )?),
            audit_retention_days: in_range(
                number("audit_retention_days", "AUDIT_RETENTION_DAYS")?,
                0,
                36_500,
                "AUDIT_RETENTION_DAYS",
            )? as u32,
            log_pii,
            event_signing_keys,
        })
    }

    pub fn dlq_name(&self) -> String {
        format!("{}.dlq", self.rabbitmq_queue)
    }
}

fn in_range(v: u64, lo: u64, hi: u64, var: &'static str) -> Result<u64, SettingsError> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(err(var, format!("{v} is outside {lo}..={hi}")))
    }
}

/// Queue, exchange and service names: printable ASCII that cannot smuggle anything into
/// logs or AMQP frames.
fn check_name(var: &'static str, v: &str) -> Result<(), SettingsError> {
    let ok = !v.is_empty()
        && v.len() <= 200
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(err(var, format!("{v:?} must be 1-200 of [A-Za-z0-9._:-]")))
    }
}

/// The schema reaches SQL as an identifier, so it is held to a strict pattern.
fn check_schema(v: &str) -> Result<(), SettingsError> {
    let mut chars = v.chars();
    let ok = v.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    // Names Postgres reserves for itself: our tables must never land among the catalogs.
    let reserved = v.starts_with("pg_") || v == "information_schema";
    if reserved {
        Err(err(
            "DATABASE_SCHEMA",
            format!("{v:?} is reserved by Postgres"),
        ))
    } else if ok {
        Ok(())
    } else {
        Err(err(
            "DATABASE_SCHEMA",
            format!("{v:?} must match [a-z_][a-z0-9_]{{0,62}}"),
        ))
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("rabbitmq_url", &mask_url(self.rabbitmq_url.expose_secret()))
            .field("rabbitmq_exchange", &self.rabbitmq_exchange)
            .field("rabbitmq_queue", &self.rabbitmq_queue)
            .field("rabbitmq_queue_type", &self.rabbitmq_queue_type)
            .field("rabbitmq_ca_file", &self.rabbitmq_ca_file)
            .field("service_name", &self.service_name)
            .field("database_url", &mask_url(self.database_url.expose_secret()))
            .field("database_schema", &self.database_schema)
            .field("prefetch", &self.prefetch)
            .field("batch_size", &self.batch_size)
            .field("batch_max_wait", &self.batch_max_wait)
            .field("retry_delays", &self.retry_delays)
            .field("max_attempts", &self.max_attempts)
            .field("max_future_skew", &self.max_future_skew)
            .field("deactivation_brake", &self.deactivation_brake)
            .field("deactivation_brake_window", &self.deactivation_brake_window)
            .field("audit_retention_days", &self.audit_retention_days)
            .field("log_pii", &self.log_pii)
            .field("event_signing_keys", &self.event_signing_keys.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::mask_url;
    use crate::redact::tests::{URLS, leaks};
    use std::collections::HashMap;
    use std::str::FromStr;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    const BASE: &[(&str, &str)] = &[
        ("service_name", "LMS"),
        ("database_url", "postgres://u:pw@db.example.com/app"),
    ];

    #[test]
    fn defaults_follow_the_spec() {
        let s = load(BASE).unwrap();
        assert_eq!(s.service_name, "lms");
        assert_eq!(s.rabbitmq_queue, "lms_user_events");
        assert_eq!(s.dlq_name(), "lms_user_events.dlq");
        assert_eq!(s.rabbitmq_exchange, "user_events");
        assert_eq!(s.rabbitmq_queue_type, QueueType::Quorum);
        assert_eq!(s.database_schema, "user_sync");
        assert_eq!(s.all_access_roles, ["teacher", "curator", "admin"]);
        assert_eq!(s.retry_delays.len(), 3);
        assert_eq!(s.max_attempts, 5);
        assert_eq!(s.max_future_skew, Duration::from_secs(86_400));
    }

    #[test]
    fn errors_name_the_variable() {
        let e = load(&[("database_url", "postgres://x/y")]).unwrap_err();
        assert_eq!(e.var, "SERVICE_NAME");
        let e = load(&[("service_name", "lms")]).unwrap_err();
        assert_eq!(e.var, "DATABASE_URL");
        let mut bad = BASE.to_vec();
        bad.push(("prefetch", "lots"));
        let e = load(&bad).unwrap_err();
        assert_eq!(e.var, "PREFETCH");
        assert!(e.to_string().contains("PREFETCH"));
        let mut bad = BASE.to_vec();
        bad.push(("database_schema", "x; drop table users"));
        assert_eq!(load(&bad).unwrap_err().var, "DATABASE_SCHEMA");
        let mut bad = BASE.to_vec();
        bad.push(("rabbitmq_queue_type", "stream"));
        assert_eq!(load(&bad).unwrap_err().var, "RABBITMQ_QUEUE_TYPE");
        let mut bad = BASE.to_vec();
        bad.push(("max_future_skew_secs", "-1"));
        assert_eq!(load(&bad).unwrap_err().var, "MAX_FUTURE_SKEW_SECS");
    }

    #[test]
    fn hostile_identifiers_are_refused_at_start() {
        let cases = [
            (
                "database_schema",
                "users\"; DROP TABLE users; --",
                "DATABASE_SCHEMA",
            ),
            ("database_schema", "Public", "DATABASE_SCHEMA"),
            ("database_schema", "pg_catalog", "DATABASE_SCHEMA"),
            ("database_schema", "information_schema", "DATABASE_SCHEMA"),
            (
                "rabbitmq_queue",
                "q\nx-dead-letter-exchange",
                "RABBITMQ_QUEUE",
            ),
            ("rabbitmq_queue", "q'x", "RABBITMQ_QUEUE"),
            ("rabbitmq_exchange", "amq.topic'", "RABBITMQ_EXCHANGE"),
            ("service_name", "lms sat", "SERVICE_NAME"),
        ];
        for (key, value, var) in cases {
            let mut bad = BASE.to_vec();
            bad.retain(|(k, _)| *k != key);
            bad.push((key, value));
            assert_eq!(load(&bad).unwrap_err().var, var, "{key}={value:?}");
        }
    }

    fn with_url(url: &str) -> Settings {
        let key = if url.starts_with("amqp") {
            "rabbitmq_url"
        } else {
            "database_url"
        };
        let mut pairs = BASE.to_vec();
        pairs.retain(|(k, _)| *k != key);
        pairs.push((key, url));
        load(&pairs).unwrap()
    }

    #[test]
    fn no_url_form_shows_its_secret_in_debug() {
        for (url, secrets) in URLS {
            let shown = format!("{:?}", with_url(url));
            assert_eq!(leaks(&shown, secrets), None, "{url} -> {shown}");
        }
    }

    #[tokio::test]
    async fn no_url_form_shows_its_secret_in_connection_errors() {
        for (url, secrets) in URLS {
            let settings = with_url(url);
            let text = if url.starts_with("amqp") {
                let e = crate::broker::connect(&settings)
                    .await
                    .expect_err("nothing listens on port 1");
                format!("{e} {e:?}")
            } else {
                // The pool would wait out its acquire timeout; a direct connection shows
                // the error it wraps, at once.
                use sqlx::ConnectOptions;
                let parsed = crate::store::Store::new(&settings)
                    .and_then(|_| sqlx::postgres::PgConnectOptions::from_str(url));
                let e = match parsed {
                    Err(e) => e,
                    Ok(opts) => opts.connect().await.expect_err("nothing listens on port 1"),
                };
                format!("{e} {e:?}")
            };
            assert_eq!(leaks(&text, secrets), None, "{url} -> {text}");
        }
        let timeout = crate::broker::BrokerError::Timeout(mask_url(URLS[15].0));
        assert_eq!(leaks(&timeout.to_string(), URLS[15].1), None);
    }

    #[test]
    fn secrets_are_masked() {
        let s = load(BASE).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("pw@"), "{shown}");
        assert!(shown.contains("u:***@db.example.com"));
    }
}
