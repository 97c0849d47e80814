//! The reads of `explain` and `status` on a target table. They need no column types, so
//! they are built with the store, before any check.

use super::{active, q, table};
use crate::target_table::TargetTable;

#[derive(Debug, Clone)]
pub(crate) struct TargetTableReads {
    /// $1 an email: the auth ids of its rows, active first.
    pub find_by_email: String,
    /// $1 an auth id: the row as `RowView` reads it (no local id, role or services: the
    /// backend's table may keep them in its own form).
    pub row_view: String,
    /// Active and inactive rows by reason.
    pub counts: String,
}

impl TargetTableReads {
    pub(crate) fn new(m: &TargetTable) -> Self {
        let (t, k, e) = (table(m), q(&m.key), q(&m.email));
        let reason = m
            .reason
            .as_deref()
            // '' is "no reason" in a reason column that may not be NULL.
            .map_or("NULL".to_string(), |r| {
                format!("nullif(x.{}::text, '')", q(r))
            });
        let active = format!("coalesce({}, false)", active(m, "x"));
        TargetTableReads {
            find_by_email: format!(
                "SELECT x.{k}::uuid FROM {t} x WHERE lower(x.{e}::text) = lower($1) \
                 AND x.{k} IS NOT NULL ORDER BY {active} DESC"
            ),
            row_view: format!(
                "SELECT NULL::int8, x.{e}::text, NULL::text, '{{}}'::text[], {active}, \
                 {reason}::text, NULL::timestamptz FROM {t} x WHERE x.{k}::text = $1::text"
            ),
            counts: format!(
                "SELECT {active}, coalesce({reason}::text, 'none'), count(*) FROM {t} x \
                 WHERE x.{k} IS NOT NULL GROUP BY 1, 2 ORDER BY 1 DESC, 2"
            ),
        }
    }
}
