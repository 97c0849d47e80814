//! The fields of an event's `user` and its timestamp: each checked, bounded and turned into
//! its clean form, or rejected with a reason that never quotes a password hash.

use super::{Rejection, UserData, WireUser, reject};
use crate::redact::PasswordHash;
use serde_json::Value;
use std::str::FromStr;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Longest accepted email (RFC 5321 allows 254; some systems store up to 320).
const MAX_EMAIL: usize = 320;
/// Longest accepted name, role or hash: far above any real one, far below Postgres's
/// ~2.7 kB limit for an indexed value, so an absurd field is rejected here, not retried.
const MAX_FIELD: usize = 1024;
/// Most services one user may be allowed.
const MAX_SERVICES: usize = 256;

fn opt_string(v: Option<Value>, field: &str, max: usize) -> Result<Option<String>, Rejection> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.contains('\0') => Err(reject(format!("{field} contains NUL"))),
        Some(Value::String(s)) if s.len() > max => {
            Err(reject(format!("{field} is longer than {max} bytes")))
        }
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(reject(format!("{field} is not a string"))),
    }
}

pub(super) fn user_data(u: WireUser) -> Result<UserData, Rejection> {
    let is_active = match u.is_active {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(reject("user.is_active is not a boolean")),
    };
    let password_hash = opt_string(u.password_hash, "user.password_hash", MAX_FIELD)?;
    if let Some(hash) = &password_hash {
        check_bcrypt(hash)?;
    }
    Ok(UserData {
        email: opt_string(u.email, "user.email", MAX_EMAIL)?,
        first_name: opt_string(u.first_name, "user.first_name", MAX_FIELD)?,
        last_name: opt_string(u.last_name, "user.last_name", MAX_FIELD)?,
        password_hash: password_hash.map(PasswordHash::from),
        role: opt_string(u.role, "user.role", MAX_FIELD)?,
        is_active,
        allowed_services: allowed_services(u.allowed_services_json)?,
    })
}

/// `allowed_services_json` is documented as a JSON string holding an array, but producers
/// also send a real array; null, "" and a missing field all mean "no services".
pub(super) fn allowed_services(v: Option<Value>) -> Result<Vec<String>, Rejection> {
    const MSG: &str = "user.allowed_services_json is not an array of strings";
    let array = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => serde_json::from_str::<Value>(&s).map_err(|_| reject(MSG))?,
        Some(other) => other,
    };
    let Value::Array(items) = array else {
        return Err(reject(MSG));
    };
    if items.len() > MAX_SERVICES {
        return Err(reject(format!(
            "user.allowed_services_json has more than {MAX_SERVICES} services"
        )));
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::String(s) if !s.contains('\0') && s.len() <= MAX_FIELD => Ok(s),
            _ => Err(reject(MSG)),
        })
        .collect()
}

/// A well-formed bcrypt hash: `$2a$`, `$2b$` or `$2y$`, cost 4-31, 53 characters of salt and
/// hash. Parsed by the `bcrypt` crate, never re-hashed or verified (that costs ~0.3 s).
pub(super) fn check_bcrypt(hash: &str) -> Result<(), Rejection> {
    const MSG: &str = "user.password_hash is not a well-formed bcrypt hash";
    let prefix_ok = ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p));
    let parts = bcrypt::HashParts::from_str(hash).map_err(|_| reject(MSG))?;
    if !prefix_ok || !(4..=31).contains(&parts.get_cost()) {
        return Err(reject(MSG));
    }
    Ok(())
}

/// RFC 3339 with `Z` or an offset, or naive (meaning UTC), with 0 to 9 fractional digits,
/// whose UTC instant lies in years 1 to 9999.
pub fn parse_timestamp(s: &str) -> Result<OffsetDateTime, Rejection> {
    let bad = || reject("timestamp is not an ISO 8601 date-time");
    if s.len() > 64 {
        return Err(bad());
    }
    let normalised = s.replacen(' ', "T", 1);
    let ts = OffsetDateTime::parse(&normalised, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(&format!("{normalised}Z"), &Rfc3339))
        .map_err(|_| bad())?;
    check_range(ts)?;
    let micros = ts.nanosecond() / 1_000 * 1_000;
    ts.replace_nanosecond(micros).map_err(|_| bad())
}

/// `9999-12-31T23:59:59-01:00` parses, but its UTC form is in year 10000, which the `time`
/// crate cannot hold: binding it to Postgres would panic. Years before 1 are refused too:
/// no real event is dated BC, and RFC 3339 has no notation for them.
fn check_range(ts: OffsetDateTime) -> Result<(), Rejection> {
    let utc = ts.checked_to_offset(time::UtcOffset::UTC);
    match utc {
        Some(utc) if (1..=9999).contains(&utc.year()) => Ok(()),
        _ => Err(reject("timestamp is outside years 1-9999 UTC")),
    }
}
