//! The target table checked against the database at start (`information_schema`, `pg_index`):
//! the table and every column exist, types fit, every NOT NULL column without a default is
//! written on insert, and the key column is unique. One line per problem.

use super::lengths::length_problems;
use super::values::Column;
use super::{q, table};
use crate::store::Store;
use crate::store::setup::SetupError;
use crate::target_table::{Deactivation, Field, Source, TargetTable};
use sqlx::Row;
use std::collections::HashMap;

/// One thing wrong with the target table against the database, naming its column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[target] {0}")]
pub struct TargetTableProblem(pub String);

const TEXT: &[&str] = &["text", "varchar", "bpchar", "citext"];
const TIME: &[&str] = &["timestamptz", "timestamp"];

impl Store {
    /// No column visible: a table not created yet (waited for by the worker) or one this
    /// database user may not read (a setting to fix).
    async fn no_columns(&self, m: &TargetTable) -> SetupError {
        let problem = |what| TargetTableProblem(format!("table: {}.{} {what}", m.schema, m.table));
        match self.target_exists(m).await {
            Ok(true) => SetupError::TargetTable(vec![problem(
                "exists, but this database user can see none of its columns",
            )]),
            Ok(false) => SetupError::Absent(problem("does not exist")),
            Err(e) => e.into(),
        }
    }

    /// The target's columns by name, or every problem found.
    pub(crate) async fn check_target_table(
        &self,
        m: &TargetTable,
    ) -> Result<HashMap<String, Column>, SetupError> {
        let columns = self.target_columns(m).await?;
        if columns.is_empty() {
            return Err(self.no_columns(m).await);
        }
        let mut problems = column_problems(m, &columns);
        let written: Vec<&str> = m.written();
        let present: Vec<&str> = written
            .iter()
            .copied()
            .chain([m.key.as_str()])
            .filter(|c| columns.contains_key(*c))
            .collect();
        for col in self.unwritable(m, &present).await? {
            problems.push(format!(
                "column `{col}`: this database user lacks the INSERT or UPDATE privilege on it"
            ));
        }
        for (name, c) in &columns {
            if !c.nullable && !c.has_default && name != &m.key && !written.contains(&name.as_str())
            {
                problems.push(format!(
                    "column `{name}` is NOT NULL without a default and `[target.columns]` does not write it"
                ));
            }
        }
        if columns.contains_key(&m.key) && !self.key_is_unique(m).await? {
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
            Err(SetupError::TargetTable(
                problems.into_iter().map(TargetTableProblem).collect(),
            ))
        }
    }

    /// Whether the table exists, whatever this user's privileges (`pg_class` is readable by
    /// every role; `information_schema` shows only what the user may touch).
    async fn target_exists(&self, m: &TargetTable) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_class c \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2)",
        )
        .bind(&m.schema)
        .bind(&m.table)
        .fetch_one(self.pool())
        .await
    }

    async fn target_columns(
        &self,
        m: &TargetTable,
    ) -> Result<HashMap<String, Column>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT column_name::text, udt_name::text, is_nullable = 'YES', \
                    column_default IS NOT NULL OR is_identity = 'YES' OR is_generated <> 'NEVER', \
                    udt_schema::text, \
                    is_generated <> 'NEVER' OR identity_generation = 'ALWAYS', \
                    character_maximum_length::int4 \
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
                    udt_schema: r.get(4),
                    nullable: r.get(2),
                    has_default: r.get(3),
                    generated: r.get::<Option<bool>, _>(5).unwrap_or(false),
                    max_chars: r.get(6),
                };
                (r.get::<String, _>(0), column)
            })
            .collect())
    }

    /// Of the written columns (and the key), those this database user may not both INSERT and
    /// UPDATE: `information_schema` shows a column to any privilege, and a write refused
    /// at run time (42501) would dead-letter every event instead of stopping at start.
    async fn unwritable(&self, m: &TargetTable, cols: &[&str]) -> Result<Vec<String>, sqlx::Error> {
        // Only columns that exist: has_column_privilege raises on any other.
        sqlx::query_scalar(
            "SELECT c FROM UNNEST($2::text[]) AS c \
             WHERE NOT (has_column_privilege(to_regclass($1), c, 'INSERT') \
                        AND has_column_privilege(to_regclass($1), c, 'UPDATE'))",
        )
        .bind(table(m))
        .bind(cols)
        .fetch_all(self.pool())
        .await
    }

    /// A unique index (or constraint) on the key column alone, without a predicate, valid
    /// and not deferrable: what `ON CONFLICT (key)` can use as its arbiter. A failed
    /// `CREATE INDEX CONCURRENTLY` leaves an INVALID index behind, which ON CONFLICT
    /// ignores; a DEFERRABLE constraint it refuses.
    async fn key_is_unique(&self, m: &TargetTable) -> Result<bool, sqlx::Error> {
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

/// What the columns' names, types and lengths get wrong, without asking the database
/// more; the warnings about lengths are logged.
fn column_problems(m: &TargetTable, columns: &HashMap<String, Column>) -> Vec<String> {
    let mut problems = Vec::new();
    for (col, wanted) in expected_types(m) {
        match columns.get(&col) {
            None => problems.push(format!(
                "column `{col}` does not exist in {}.{}",
                m.schema, m.table
            )),
            Some(c) if !wanted.is_empty() && !wanted.contains(&c.udt.as_str()) => {
                problems.push(format!(
                    "column `{col}` is {}, expected one of {}",
                    c.udt,
                    wanted.join(", ")
                ))
            }
            Some(_) => {}
        }
    }
    let written = m.written();
    for col in written.iter().chain([&m.key.as_str()]) {
        if columns.get(*col).is_some_and(|c| c.generated) {
            problems.push(format!(
                "column `{col}` is generated by the database (GENERATED ALWAYS) and cannot \
                 be written"
            ));
        }
    }
    for (col, source) in &m.columns {
        let not_null = columns.get(col).is_some_and(|c| !c.nullable);
        if not_null && matches!(source, Source::RoleMap { default: None, .. }) {
            problems.push(format!(
                "column `{col}` is NOT NULL and its role_map has no `default`: every \
                 user of another role would be refused"
            ));
        }
    }
    let (lengths, warnings) = length_problems(m, columns);
    problems.extend(lengths);
    for warning in warnings {
        tracing::warn!("[target] {warning}");
    }
    problems
}

/// Each column the `[target]` section names, with the types it may have (empty: any, the value is
/// cast).
fn expected_types(m: &TargetTable) -> Vec<(String, &'static [&'static str])> {
    let mut out: Vec<(String, &'static [&'static str])> =
        vec![(m.key.clone(), &["uuid", "text", "varchar"])];
    for (col, source) in &m.columns {
        let types: &'static [&'static str] = match source {
            Source::Field {
                field: Field::AllowedServices,
                ..
            } => &["_text", "_varchar", "json", "jsonb", "text"],
            Source::Field { .. } | Source::Computed(_) => TEXT,
            Source::NowOnInsert | Source::Now => &["timestamptz", "timestamp", "date"],
            Source::AuthIdOnInsert => &["text", "varchar", "bpchar", "uuid"],
            Source::Constant(_) | Source::ConstantOnInsert(_) | Source::RoleMap { .. } => &[],
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

/// What the backend adds for its target table: the key column and its unique index. Printed by
/// `user-sync migrate --print-target-sql`, never run by the service.
pub fn target_table_ddl(m: &TargetTable) -> String {
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
    pub(crate) async fn email_indexed(&self, m: &TargetTable) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass($1) \
               AND i.indisvalid AND (\
                 position('lower(' || quote_ident($2) || ')' in pg_get_indexdef(i.indexrelid)) > 0 \
                 OR position('lower((' || quote_ident($2) || ')::' in pg_get_indexdef(i.indexrelid)) > 0))",
        )
        .bind(table(m))
        .bind(&m.email)
        .fetch_one(self.pool())
        .await
    }
}
