//! Keys of the settings file that nothing reads are refused at start, naming the nearest
//! known one. A misspelt key (`event_signing_key`) used to be dropped without a word: the
//! worker started without what it meant to set (there, every signature check). Only the
//! file is checked: the environment holds every other program's variables too.

use super::{SettingsError, err};
use config::{File, FileFormat, Map, Source, Value, ValueKind};

/// Every setting's key, as `Settings::from_lookup` reads them (a test holds the two equal).
pub(super) const SETTINGS: &[&str] = &[
    "service_name",
    "rabbitmq_url",
    "rabbitmq_exchange",
    "rabbitmq_queue",
    "rabbitmq_queue_type",
    "rabbitmq_ca_file",
    "rabbitmq_cert_file",
    "rabbitmq_key_file",
    "rabbitmq_addresses",
    "rabbitmq_heartbeat_secs",
    "database_url",
    "database_schema",
    "database_max_connections",
    "all_access_roles",
    "prefetch",
    "batch_size",
    "batch_max_wait_ms",
    "pipeline_depth",
    "max_body_bytes",
    "max_held_bytes",
    "max_future_skew_secs",
    "event_signing_keys",
    "retry_delays_ms",
    "max_attempts",
    "http_addr",
    "health_stall_secs",
    "log_format",
    "log_pii",
    "shutdown_timeout_ms",
    "deactivation_brake",
    "deactivation_brake_window_s",
    "audit_retention_days",
];

/// The file's sections besides the settings. `[target]` and `[target.deactivation]` refuse
/// an unknown key themselves (serde's `deny_unknown_fields`).
const SECTIONS: &[&str] = &["target"];

/// A `[target.columns]` source written as a table: the key naming its kind, and the keys
/// that kind takes. serde reads these as an untagged enum, which ignores any other key.
const COLUMN_SOURCES: &[(&str, &[&str])] = &[
    (
        "field",
        &[
            "field",
            "prefix",
            "bcrypt",
            "case",
            "max_length",
            "too_long",
        ],
    ),
    ("template", &["template", "case", "max_length", "too_long"]),
    ("constant", &["constant", "insert_only"]),
    ("role_map", &["role_map", "default"]),
];

/// The settings file at `path` (none is fine) holds no key that nothing reads.
pub(super) fn check_file(path: &str) -> Result<(), SettingsError> {
    let written = File::new(path, FileFormat::Toml)
        .required(false)
        .collect()
        .map_err(|e| err("CONFIG_FILE", e.to_string()))?;
    check(&written)
}

fn check(file: &Map<String, Value>) -> Result<(), SettingsError> {
    let known = || SETTINGS.iter().chain(SECTIONS).copied();
    if let Some(key) = sorted(file).find(|key| !known().any(|k| k == *key)) {
        let problem = format!("unknown setting `{key}`{}", hint(key, known()));
        return Err(err("CONFIG_FILE", problem));
    }
    let columns = file
        .get("target")
        .and_then(table)
        .and_then(|target| target.get("columns"))
        .and_then(table);
    columns.map_or(Ok(()), check_columns)
}

fn check_columns(columns: &Map<String, Value>) -> Result<(), SettingsError> {
    for column in sorted(columns) {
        // A source given by name, or a table of no known kind, is serde's to refuse.
        let Some(source) = table(&columns[column]) else {
            continue;
        };
        let kind = COLUMN_SOURCES.iter().find(|(k, _)| source.contains_key(*k));
        let Some((_, keys)) = kind else {
            continue;
        };
        if let Some(key) = sorted(source).find(|key| !keys.contains(key)) {
            let problem = format!(
                "unknown field `{key}` in column `{column}`{}",
                hint(key, keys.iter().copied())
            );
            return Err(err("[target]", problem));
        }
    }
    Ok(())
}

fn table(value: &Value) -> Option<&Map<String, Value>> {
    match &value.kind {
        ValueKind::Table(table) => Some(table),
        _ => None,
    }
}

/// The keys in order, so that of several mistakes the same one is reported every time.
fn sorted(map: &Map<String, Value>) -> impl Iterator<Item = &str> {
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys.into_iter()
}

fn hint<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    nearest(key, known)
        .map(|name| format!(" (did you mean `{name}`?)"))
        .unwrap_or_default()
}

/// The known name closest to `key` (case aside), if within 2 edits or a third of its
/// length, whichever allows more; of equally close ones, the first.
fn nearest<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let key = key.to_lowercase();
    let limit = (key.chars().count() / 3).max(2);
    known
        .into_iter()
        .map(|name| (distance(&key, name), name))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

/// Levenshtein distance: insertions, deletions and substitutions, by character.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
