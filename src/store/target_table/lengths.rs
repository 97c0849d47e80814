//! Lengths checked at start against `varchar(n)` and `char(n)` columns: a computed
//! column's `max_length` must fit the column, a password hash with its prefix must, and so
//! must the `free_email` tombstone in every column written from the email. A text column
//! of limited length written without `max_length` is only warned about: configurations
//! from before `max_length` keep starting, and the database refuses an over-long value
//! (retried, then dead-lettered).

use super::values::{Column, Types};
use crate::target_table::{AUTH_ID, Field, Source, TargetTable};

/// The length of a well-formed bcrypt hash, the only kind an event carries.
const BCRYPT_LEN: usize = 60;
/// An auth id in its text form, as the tombstone holds it.
const UUID_LEN: usize = 36;

/// What the target's lengths get wrong: (problems, warnings), one line each.
pub(super) fn length_problems(m: &TargetTable, columns: &Types) -> (Vec<String>, Vec<String>) {
    let (mut problems, mut warnings) = (Vec::new(), Vec::new());
    for (col, source) in &m.columns {
        let limit = columns.get(col).and_then(Column::char_limit);
        let shown = |n: i32| format!("{}({n})", columns[col].udt);
        match (source, limit) {
            (_, None) => {}
            (
                Source::Field {
                    field: Field::PasswordHash,
                    prefix,
                    ..
                },
                Some(n),
            ) => {
                let need = prefix.chars().count() + BCRYPT_LEN;
                if need > n as usize {
                    problems.push(format!(
                        "column `{col}` is {}: a bcrypt hash with its prefix takes {need} characters",
                        shown(n)
                    ));
                }
            }
            (Source::Computed(c), Some(n)) => match c.limit {
                Some(l) if l.max > n as usize => problems.push(format!(
                    "column `{col}`: max_length {} is over the column's {}",
                    l.max,
                    shown(n)
                )),
                Some(_) => {}
                None => warnings.push(unlimited(col, &shown(n))),
            },
            (Source::Field { .. }, Some(n)) => warnings.push(unlimited(col, &shown(n))),
            _ => {}
        }
    }
    if let Some(pattern) = &m.free_email {
        problems.extend(tombstone_problems(m, columns, pattern));
    }
    (problems, warnings)
}

fn unlimited(col: &str, shown: &str) -> String {
    format!(
        "column `{col}` is {shown} and has no max_length: the database will refuse a longer \
         value (retried, then dead-lettered); give it max_length and too_long = \"truncate\" \
         or \"refuse\""
    )
}

/// The tombstone must fit every column written from the email: the column's length and
/// its `max_length` (a tombstone cut short could repeat another's).
fn tombstone_problems(m: &TargetTable, columns: &Types, pattern: &str) -> Vec<String> {
    let ids = pattern.matches(AUTH_ID).count();
    let need = pattern.chars().count() - ids * AUTH_ID.len() + ids * UUID_LEN;
    let mut problems = Vec::new();
    for (col, source) in &m.columns {
        if source.email_case().is_none() {
            continue;
        }
        let too_short = |what: String| {
            format!(
                "deactivation.free_email: the tombstone takes {need} characters, over column \
                 `{col}`'s {what}"
            )
        };
        if let Some(n) = columns.get(col).and_then(Column::char_limit)
            && need > n as usize
        {
            problems.push(too_short(format!("{}({n})", columns[col].udt)));
        }
        if let Source::Computed(c) = source
            && let Some(l) = c.limit
            && need > l.max
        {
            problems.push(too_short(format!("max_length {}", l.max)));
        }
    }
    problems
}

#[cfg(test)]
mod tests;
