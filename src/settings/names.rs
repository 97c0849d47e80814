//! Names that reach AMQP frames, logs or SQL, held to strict patterns.

use super::{SettingsError, err};

/// Queue, exchange and service names: printable ASCII that cannot smuggle anything into
/// logs or AMQP frames.
pub(super) fn named(var: &'static str, v: String) -> Result<String, SettingsError> {
    let ok = !v.is_empty()
        && v.len() <= 200
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
    if ok {
        Ok(v)
    } else {
        Err(err(var, format!("{v:?} must be 1-200 of [A-Za-z0-9._:-]")))
    }
}

/// The schema reaches SQL as an identifier, so it is held to a strict pattern.
pub(super) fn schema_name(v: String) -> Result<String, SettingsError> {
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
        Ok(v)
    } else {
        Err(err(
            "DATABASE_SCHEMA",
            format!("{v:?} must match [a-z_][a-z0-9_]{{0,62}}"),
        ))
    }
}
