//! The statements for a target table (`[target]`), generated once at start from its
//! section and the columns' types: the same guarded, set-based statements as for the
//! service's own table, with every identifier quoted and every value bound.

mod check;
mod lengths;
mod reads;
mod referenced;
mod sql;
mod upsert;
mod values;

pub use check::{TargetTableProblem, target_table_ddl};
pub(crate) use reads::TargetTableReads;
pub(crate) use sql::TargetTableSql;
pub(crate) use values::Param;

use crate::target_table::{Deactivation, TargetTable};

/// `"name"`: identifiers were checked to be plain lower-case at start; quoted anyway.
fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The target table, schema-qualified and quoted.
fn table(m: &TargetTable) -> String {
    format!("{}.{}", q(&m.schema), q(&m.table))
}

/// The predicate "this row's user is active", on alias `a`.
fn active(m: &TargetTable, a: &str) -> String {
    match &m.deactivation {
        Deactivation::Flag(c) => format!("{a}.{}", q(c)),
        Deactivation::Timestamp(c) => match &m.timestamp_value {
            None => format!("{a}.{} IS NULL", q(c)),
            // Any other value is the backend's own: a lockout that ends by itself, or an
            // administrator's for good (Identity's `DateTimeOffset.MaxValue`, `infinity`).
            Some(v) => format!("{a}.{} IS DISTINCT FROM '{v}'::timestamptz", q(c)),
        },
    }
}
