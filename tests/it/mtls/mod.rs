//! Mutual TLS: user-sync presenting a client certificate to RabbitMQ (the EXTERNAL
//! mechanism, or a password over the same TLS) and to Postgres (`cert` authentication),
//! each a server of the test's own that asks for one, with certificates made at test time.
//! A missing or wrong certificate is refused with an error that names the problem.
//!
//! Ignored in the plain run because each starts a server of its own (a RabbitMQ node takes
//! about 10 s); `.ci/run` runs them with `--ignored` in a block of their own.

mod broker;
mod nodes;
mod postgres;
mod worker;

use std::collections::HashMap;
use std::path::Path;
use user_sync::settings::{Settings, SettingsError};

/// Settings from `vars` (variable names as in the environment) over a minimal base.
pub(crate) fn settings(vars: &[(&str, String)]) -> Result<Settings, SettingsError> {
    let mut all: HashMap<String, String> = [
        ("service_name", "lms"),
        ("http_addr", "127.0.0.1:0"),
        ("retry_delays_ms", "50,100"),
        ("max_attempts", "3"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (var, value) in vars {
        all.insert(var.to_lowercase(), value.clone());
    }
    Settings::from_lookup(|key| all.get(key).cloned())
}

pub(crate) fn shown(path: &Path) -> String {
    path.display().to_string()
}
