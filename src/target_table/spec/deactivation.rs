//! The `[target.deactivation]` section as written, resolved.

use super::{AUTH_ID, DeactivationSpec};
use crate::target_table::{Deactivation, TargetTableError};

/// The deactivation column, with `free_email` checked.
pub(super) fn resolve(spec: &DeactivationSpec) -> Result<Deactivation, TargetTableError> {
    let bad = |m: String| Err(TargetTableError(m));
    let deactivation = match (&spec.flag, &spec.timestamp) {
        (Some(c), None) => Deactivation::Flag(c.clone()),
        (None, Some(c)) => Deactivation::Timestamp(c.clone()),
        _ => return bad("deactivation: give exactly one of `flag` or `timestamp`".into()),
    };
    if let Some(p) = &spec.free_email
        && !p.contains(AUTH_ID)
    {
        // Without the auth id two freed rows would hold the same email again.
        return bad(format!(
            "deactivation.free_email: `{p}` does not hold `{AUTH_ID}` (e.g. \"deleted+{AUTH_ID}@invalid\")"
        ));
    }
    Ok(deactivation)
}

/// `timestamp_value`, checked to be an RFC 3339 time and written back in that form (it
/// goes into the statements as a literal), and only beside `timestamp`.
pub(super) fn timestamp_value(spec: &DeactivationSpec) -> Result<Option<String>, TargetTableError> {
    use time::format_description::well_known::Rfc3339;
    let Some(v) = &spec.timestamp_value else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Err(TargetTableError(format!(
            "deactivation.timestamp_value: {why}"
        )))
    };
    if spec.timestamp.is_none() {
        return bad("goes with `timestamp`, not `flag`");
    }
    match time::OffsetDateTime::parse(v, &Rfc3339) {
        // The sync knows its deactivation by this exact value: a fraction would be rounded
        // away by a `timestamp(0)` column.
        Ok(t) if t.nanosecond() != 0 => bad(&format!("`{v}` is not whole seconds")),
        Ok(t) => Ok(Some(t.format(&Rfc3339).expect("a parsed time formats"))),
        Err(_) => bad(&format!(
            "`{v}` is not an RFC 3339 time (e.g. \"9999-12-31T23:59:59Z\")"
        )),
    }
}
