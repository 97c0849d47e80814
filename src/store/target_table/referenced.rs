//! Foreign keys of other tables that refer to a column the sync rewrites: without
//! `ON UPDATE CASCADE` the database refuses a write that changes it (Spring Security's
//! `authorities` refers to `users.username`, which the sync writes from the email).

use super::table;
use crate::store::Store;
use crate::target_table::TargetTable;

impl Store {
    /// One line per foreign key that refers to a column the sync updates and would refuse
    /// a change of it: `key` of `table` on `column`.
    pub async fn target_keys_without_cascade(&self) -> Result<Vec<String>, sqlx::Error> {
        let Some(m) = &self.target_table else {
            return Ok(Vec::new());
        };
        let updated: Vec<&str> = updated_columns(m);
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT c.conname::text, c.conrelid::regclass::text, a.attname::text \
             FROM pg_constraint c \
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = ANY (c.confkey) \
             WHERE c.contype = 'f' AND c.confrelid = to_regclass($1) \
               AND c.confupdtype <> 'c' AND a.attname = ANY ($2) \
             ORDER BY 1",
        )
        .bind(table(m))
        .bind(&updated)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(key, from, column)| format!("`{key}` of {from} on `{column}`"))
            .collect())
    }
}

/// The columns an update may change (every written one but those written on insert only).
fn updated_columns(m: &TargetTable) -> Vec<&str> {
    let insert_only: Vec<&str> = m
        .columns
        .iter()
        .filter(|(_, s)| s.insert_only())
        .map(|(c, _)| c.as_str())
        .collect();
    m.written()
        .into_iter()
        .filter(|c| !insert_only.contains(c))
        .collect()
}
