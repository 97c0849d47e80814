//! The shape of the row upsert, for the own table and a target table alike.
//!
//! `INSERT ... ON CONFLICT DO UPDATE` locks an existing row before it writes the row's new
//! version: a `Heap/LOCK` WAL record per row, and a whole page after each checkpoint
//! (BENCHMARKS.md, "Database cost"). A plain UPDATE writes only the new version. So one
//! statement UPDATEs the rows that exist and INSERTs the rest, in data-modifying CTEs:
//! - `probe` looks every batch row up once in the statement's snapshot: absent, or
//!   present and already holding the batch's values (`same`: nothing to write);
//! - `moved` updates the others. Its WHERE is re-checked on the newest version of a row
//!   another transaction changed meanwhile (EvalPlanQual); a row deleted meanwhile (by the
//!   backend) is skipped;
//! - `added` inserts the absent rows; ON CONFLICT DO NOTHING skips one inserted meanwhile.
//!
//! The statement returns the rows it updated (auth id, false, changed fields), inserted
//! (auth id, true, NULL) and found the same (auth id, NULL, NULL). A batch row in none of
//! them was missed by a race above, and the caller runs the statement again for it: in
//! READ COMMITTED the next statement's snapshot sees what the other transaction committed.
//! Every user here holds its watermark row's lock (the guard ran first), so another of
//! our transactions cannot be the one racing: only the backend's own writes can.

/// The parts of one table's upsert. Expressions read the batch as `i` (in `values`), its
/// computed row as `n`, the table's row as `u`, and (in `changed`) the row as the
/// statement's snapshot had it as `o`.
pub(crate) struct Upsert<'a> {
    pub table: &'a str,
    pub key: &'a str,
    /// The FROM item of the batch, as alias `i`.
    pub batch: &'a str,
    /// `expression AS column`, the key first: the row an insert would write.
    pub values: &'a str,
    /// The inserted columns, in the order of `values`.
    pub columns: &'a str,
    /// The assignments of an update, from `n` (and `u`).
    pub sets: &'a str,
    /// The compared columns of `u`, and the values the update would give them.
    pub olds: &'a str,
    pub news: &'a str,
    /// The `audit::FIELDS` bits of the columns whose value `o` and `u` differ in.
    pub changed: &'a str,
}

pub(crate) fn upsert_sql(x: &Upsert) -> String {
    let Upsert {
        table,
        key,
        batch,
        values,
        columns,
        sets,
        olds,
        news,
        changed,
    } = x;
    format!(
        "WITH n AS (SELECT {values} FROM {batch}), \
         probe AS (SELECT n.*, u.{key} IS NULL AS user_sync_absent, \
             u.{key} IS NOT NULL AND ({olds}) IS NOT DISTINCT FROM ({news}) AS user_sync_same \
           FROM n LEFT JOIN {table} u ON u.{key} = n.{key}), \
         moved AS (UPDATE {table} u SET {sets} FROM probe n \
           WHERE u.{key} = n.{key} AND NOT n.user_sync_same AND NOT n.user_sync_absent \
             AND ({olds}) IS DISTINCT FROM ({news}) \
           RETURNING u.{key}::uuid AS k, false AS inserted, \
             (SELECT ({changed}) FROM {table} o WHERE o.{key} = u.{key})::int2 AS bits), \
         added AS (INSERT INTO {table} ({columns}) SELECT {columns} FROM probe n \
           WHERE n.user_sync_absent ON CONFLICT ({key}) DO NOTHING RETURNING {key}::uuid AS k) \
         SELECT * FROM moved \
         UNION ALL SELECT k, true, NULL FROM added \
         UNION ALL SELECT n.{key}::uuid, NULL, NULL FROM probe n WHERE n.user_sync_same"
    )
}
