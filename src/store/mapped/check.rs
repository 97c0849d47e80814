//! The mapping checked against the database at start (`information_schema`, `pg_index`):
//! the table and every column exist, types fit, every NOT NULL column without a default is
//! written on insert, and the key column is unique. One line per problem.

use super::sql::Column;
use super::{q, table};
use crate::store::Store;
use crate::target::{Deactivation, Field, Mapping, Source};
use sqlx::Row;
use std::collections::HashMap;

/// One thing wrong with the mapping against the database, naming its column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[target] {0}")]
pub struct TargetProblem(pub String);

const TEXT: &[&str] = &["text", "varchar", "bpchar", "citext"];
const TIME: &[&str] = &["timestamptz", "timestamp"];

impl Store {
    /// The target's columns by name, or every problem found.
    pub(crate) async fn check_target(
        &self,
        m: &Mapping,
    ) -> Result<HashMap<String, Column>, Vec<TargetProblem>> {
        let db = |e: sqlx::Error| vec![TargetProblem(format!("cannot read the catalog: {e}"))];
        let columns = self.target_columns(m).await.map_err(db)?;
        if columns.is_empty() {
            return Err(vec![TargetProblem(format!(
                "table: {}.{} does not exist (or this user cannot see it)",
                m.schema, m.table
            ))]);
        }
        let mut problems = Vec::new();
        for (col, wanted) in expected_types(m) {
            match columns.get(&col) {
                None => problems.push(format!(
                    "column `{col}` does not exist in {}.{}",
                    m.schema, m.table
                )),
                Some(c) if !wanted.is_empty() && !wanted.contains(&c.udt.as_str()) => problems
                    .push(format!(
                        "column `{col}` is {}, expected one of {}",
                        c.udt,
                        wanted.join(", ")
                    )),
                Some(_) => {}
            }
        }
        let written: Vec<&str> = m.written();
        for (name, c) in &columns {
            if !c.nullable && !c.has_default && name != &m.key && !written.contains(&name.as_str())
            {
                problems.push(format!(
                    "column `{name}` is NOT NULL without a default and the mapping does not write it"
                ));
            }
        }
        if columns.contains_key(&m.key) && !self.key_is_unique(m).await.map_err(db)? {
            problems.push(format!(
                "key `{}` has no unique index of its own (valid, not deferrable, without WHERE; \
                 drop one left INVALID by a failed CREATE INDEX CONCURRENTLY, then see \
                 `user-sync migrate --print-target-sql`)",
                m.key
            ));
        }
        if problems.is_empty() {
            Ok(columns)
        } else {
            Err(problems.into_iter().map(TargetProblem).collect())
        }
    }

    async fn target_columns(&self, m: &Mapping) -> Result<HashMap<String, Column>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT column_name::text, udt_name::text, is_nullable = 'YES', \
                    column_default IS NOT NULL OR is_identity = 'YES' OR is_generated <> 'NEVER' \
             FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
        )
        .bind(&m.schema)
        .bind(&m.table)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let column = Column {
                    udt: r.get(1),
                    nullable: r.get(2),
                    has_default: r.get(3),
                };
                (r.get::<String, _>(0), column)
            })
            .collect())
    }

    /// A unique index (or constraint) on the key column alone, without a predicate, valid
    /// and not deferrable: what `ON CONFLICT (key)` can use as its arbiter. A failed
    /// `CREATE INDEX CONCURRENTLY` leaves an INVALID index behind, which ON CONFLICT
    /// ignores; a DEFERRABLE constraint it refuses.
    async fn key_is_unique(&self, m: &Mapping) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_index i \
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnatts = 1 \
               AND i.indpred IS NULL AND i.indisvalid AND i.indimmediate \
               AND a.attname = $2)",
        )
        .bind(table(m))
        .bind(&m.key)
        .fetch_one(self.pool())
        .await
    }
}

/// Each column the mapping names, with the types it may have (empty: any, the value is
/// cast).
fn expected_types(m: &Mapping) -> Vec<(String, &'static [&'static str])> {
    let mut out: Vec<(String, &'static [&'static str])> =
        vec![(m.key.clone(), &["uuid", "text", "varchar"])];
    for (col, source) in &m.columns {
        let types: &'static [&'static str] = match source {
            Source::Field {
                field: Field::AllowedServices,
                ..
            } => &["_text", "_varchar", "json", "jsonb", "text"],
            Source::Field { .. } => TEXT,
            Source::NowOnInsert | Source::Now => &["timestamptz", "timestamp", "date"],
            Source::Constant(_) | Source::RoleMap { .. } => &[],
        };
        out.push((col.clone(), types));
    }
    out.push(match &m.deactivation {
        Deactivation::Flag(c) => (c.clone(), &["bool"]),
        Deactivation::Timestamp(c) => (c.clone(), TIME),
    });
    if let Some(r) = &m.reason {
        out.push((r.clone(), TEXT));
    }
    out
}

/// What the backend adds for the mapping: the key column and its unique index. Printed by
/// `user-sync migrate --print-target-sql`, never run by the service.
pub fn target_sql(m: &Mapping) -> String {
    let index = q(&format!("{}_{}_key", m.table, m.key));
    let by_email = q(&format!("{}_{}_lower_idx", m.table, m.email));
    format!(
        "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {k} uuid;\n\
         CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {t} ({k});\n\
         CREATE INDEX CONCURRENTLY IF NOT EXISTS {by_email} ON {t} (lower({e}));\n",
        t = table(m),
        k = q(&m.key),
        e = q(&m.email)
    )
}

impl Store {
    /// Whether an index serves `lower(email)`: without one, finding conflicts and rows to
    /// adopt scans the table per event unless the planner may hash-join.
    pub(crate) async fn email_indexed(&self, m: &Mapping) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass($1) \
               AND i.indisvalid AND pg_get_indexdef(i.indexrelid) ~ ('lower\\(\\(?' || $2 || '\\)?'))",
        )
        .bind(table(m))
        .bind(&m.email)
        .fetch_one(self.pool())
        .await
    }
}
