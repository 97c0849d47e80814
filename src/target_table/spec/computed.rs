//! A computed column's `case`, `max_length` and `too_long` as written, resolved.

use super::ShapeSpec;
use crate::target_table::computed::TEXT_FIELDS;
use crate::target_table::{Case, Computed, Field, Limit, Source, TargetTableError, TooLong, Value};

pub(super) fn resolve(
    column: &str,
    value: Value,
    shape: &ShapeSpec,
) -> Result<Source, TargetTableError> {
    let bad = |m: String| Err(TargetTableError(format!("columns.{column}: {m}")));
    if let Value::Field(f) = value
        && !TEXT_FIELDS.contains(&f)
    {
        return bad(format!(
            "`{}` takes no `case` or `max_length` (only {} do)",
            f.name(),
            TEXT_FIELDS.map(Field::name).join(", ")
        ));
    }
    let case = match shape.case.as_deref() {
        None => None,
        Some("lower") => Some(Case::Lower),
        Some("upper") => Some(Case::Upper),
        Some(other) => return bad(format!("case `{other}` is not \"lower\" or \"upper\"")),
    };
    let too_long = match shape.too_long.as_deref() {
        None => None,
        Some("truncate") => Some(TooLong::Truncate),
        Some("refuse") => Some(TooLong::Refuse),
        Some(other) => {
            return bad(format!(
                "too_long `{other}` is not \"truncate\" or \"refuse\""
            ));
        }
    };
    let limit = match (shape.max_length, too_long) {
        (None, None) => None,
        (None, Some(_)) => return bad("`too_long` needs a `max_length`".into()),
        (Some(_), None) => {
            return bad(
                "`max_length` needs `too_long = \"truncate\"` or `too_long = \"refuse\"`".into(),
            );
        }
        (Some(n), Some(too_long)) => match usize::try_from(n) {
            Ok(max) if max > 0 => Some(Limit { max, too_long }),
            _ => {
                return bad(format!(
                    "max_length {n} is not a positive number of characters"
                ));
            }
        },
    };
    Ok(Source::Computed(Computed { value, case, limit }))
}
