//! The statements for a mapped target table (`[target]`), generated once at start from the
//! mapping and the columns' types: the same guarded, set-based statements as for the
//! service's own table, with every identifier quoted and every value bound.

mod check;
mod reads;
mod sql;

pub use check::{TargetProblem, target_sql};
pub(crate) use reads::MappedReads;
pub(crate) use sql::{MappedSql, Param};

use crate::target::{Deactivation, Mapping};

/// `"name"`: identifiers were checked to be plain lower-case at start; quoted anyway.
fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The target table, schema-qualified and quoted.
fn table(m: &Mapping) -> String {
    format!("{}.{}", q(&m.schema), q(&m.table))
}

/// The predicate "this row's user is active", on alias `a`.
fn active(m: &Mapping, a: &str) -> String {
    match &m.deactivation {
        Deactivation::Flag(c) => format!("{a}.{}", q(c)),
        Deactivation::Timestamp(c) => format!("{a}.{} IS NULL", q(c)),
    }
}
