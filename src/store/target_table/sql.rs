//! Statement texts for a target table. The batch arrives as the same UNNEST arrays as for
//! the own table ($1 auth ids, $2 email, $3 first name, $4 last name, $5 password hash,
//! $6 role, $7 allowed services as JSON, $8 active, $9 reason); constants, role maps and
//! the computed columns' arrays (rendered per row) follow as further parameters. Each
//! value is cast to its column's type.

use super::upsert::upsert_changes;
use super::values::{
    Param, Types, cast, deactivated_at, key_of, reason_value, timestamp_status, tombstone,
};
use super::{active, q, table};
use crate::target_table::{Case, Deactivation, Source, TargetTable};

/// The generated statements of one target table.
#[derive(Debug, Clone)]
pub(crate) struct TargetTableSql {
    /// The watermark guard, telling whether the table has rows without a key.
    pub advance: String,
    pub upsert_changes: String,
    pub adopt: String,
    pub conflicts: String,
    pub update_status: String,
    /// With `free_email`: the statement ($1 auth ids, $2 emails, $3 the pattern; see
    /// [`free_email`]) and the pattern.
    pub free_email: Option<(String, String)>,
    /// $1 auth ids: those that have a row (an import tells a created user from an update).
    pub existing: String,
    /// Bound after the batch's nine arrays, in order, by `upsert` and `upsert_changes`.
    pub params: Vec<Param>,
    /// The case the email column is written in: the batch's emails are compared in it.
    pub email_case: Option<Case>,
    /// No index serves `lower(email)`: each attempt lets the planner hash-join (one scan
    /// of the table per statement) instead of the nested loops the connection prefers,
    /// which would scan the table once per event.
    pub hash_joins: bool,
}

impl TargetTableSql {
    /// `types`: each written column's type (`information_schema.columns.udt_name`).
    pub(crate) fn new(m: &TargetTable, types: &Types) -> Self {
        let mut params = Vec::new();
        TargetTableSql {
            upsert_changes: upsert_changes(m, types, &mut params),
            advance: crate::store::guard::advance_sql(&format!(
                "SELECT 1 FROM {} n WHERE n.{} IS NULL",
                table(m),
                q(&m.key)
            )),
            adopt: adopt(m, types),
            conflicts: conflicts(m, types),
            update_status: update_status(m, types),
            free_email: m
                .free_email
                .as_ref()
                .map(|p| (free_email(m, types), p.clone())),
            existing: format!(
                "SELECT x.{k}::uuid FROM {t} x JOIN UNNEST($1::uuid[]) AS i(auth_user_id) \
                 ON x.{k} = {key}",
                t = table(m),
                k = q(&m.key),
                key = key_of(m, types, "i.auth_user_id")
            ),
            params,
            email_case: m
                .columns
                .iter()
                .find(|(c, _)| *c == m.email)
                .and_then(|(_, s)| s.email_case().flatten()),
            hash_joins: false,
        }
    }
}

/// Links a row the backend had before the sync (same email, no auth id), an active one
/// first, unless the auth user already has a row. As for the own table, a one-time filter
/// skips the per-row probes once no row lacks a key (the key's unique index finds a NULL).
/// `u.{k} IS NULL` is re-checked on a row another transaction linked meanwhile (see the
/// own table's `ADOPT_SQL`; here the new row version's ctid would also fail the match).
fn adopt(m: &TargetTable, types: &Types) -> String {
    let (t, k, e) = (table(m), q(&m.key), q(&m.email));
    let key = key_of(m, types, "i.auth_user_id");
    format!(
        "UPDATE {t} u SET {k} = {key} \
         FROM UNNEST($1::uuid[], $2::text[]) AS i(auth_user_id, email) \
         WHERE u.{k} IS NULL AND EXISTS (SELECT 1 FROM {t} n WHERE n.{k} IS NULL) \
           AND u.ctid = (SELECT l.ctid FROM {t} l WHERE l.{k} IS NULL \
                         AND lower(l.{e}) = lower(i.email) \
                         ORDER BY {} DESC, l.ctid LIMIT 1) \
           AND NOT EXISTS (SELECT 1 FROM {t} x WHERE x.{k} = {key}) \
         RETURNING i.auth_user_id",
        active(m, "l")
    )
}

fn conflicts(m: &TargetTable, types: &Types) -> String {
    let (t, k, e) = (table(m), q(&m.key), q(&m.email));
    format!(
        "SELECT i.auth_user_id FROM UNNEST($1::uuid[], $2::text[]) AS i(auth_user_id, email) \
         WHERE EXISTS (SELECT 1 FROM {t} c WHERE lower(c.{e}) = lower(i.email) AND {} \
                       AND c.{k} IS DISTINCT FROM {})",
        active(m, "c"),
        key_of(m, types, "i.auth_user_id")
    )
}

/// Gives existing rows the status their newest event set: $1 auth ids, $2 active, $3
/// reason, $4 event time. Returns each row's key and whether its status changed.
fn update_status(m: &TargetTable, types: &Types) -> String {
    let mut sets = vec![match &m.deactivation {
        Deactivation::Flag(c) => format!("{} = {}", q(c), cast("s.active".into(), &types[c])),
        Deactivation::Timestamp(c) => format!(
            "{} = {}",
            q(c),
            timestamp_status(m, c, "s.active", &cast(deactivated_at(m), &types[c]))
        ),
    }];
    if let Some(r) = &m.reason {
        sets.push(format!(
            "{} = {}",
            q(r),
            reason_value("s.reason", &types[r])
        ));
    }
    for (col, source) in &m.columns {
        if *source == Source::Now {
            sets.push(format!("{} = now()", q(col)));
        }
    }
    format!(
        "UPDATE {} u SET {} \
         FROM UNNEST($1::uuid[], $2::bool[], $3::text[], $4::timestamptz[]) \
           AS s(auth_user_id, active, reason, ts) \
         WHERE u.{k} = {} RETURNING u.{k}::uuid, coalesce((SELECT ({o}) IS DISTINCT FROM ({n}) \
           FROM {t} o WHERE o.{k} = u.{k}), true)",
        table(m),
        sets.join(", "),
        key_of(m, types, "s.auth_user_id"),
        k = q(&m.key),
        t = table(m),
        o = status_of(m, "o"),
        n = status_of(m, "u"),
    )
}

/// Gives the tombstone to every email column of the deactivated rows of other auth users
/// that hold an email of the batch (any case), so the batch's rows fit a unique email
/// index. Returns the freed row's auth id, the claiming auth id, and the email the row
/// held: the sub-select reads the statement's snapshot, the row as it was before.
fn free_email(m: &TargetTable, types: &Types) -> String {
    let (t, k, e) = (table(m), q(&m.key), q(&m.email));
    let sets: Vec<String> = m
        .columns
        .iter()
        .filter_map(|(c, s)| Some((c, s.email_case()?)))
        .map(|(c, case)| {
            let tomb = tombstone("$3", &format!("x.{k}"), case);
            format!("{} = {}", q(c), cast(tomb, &types[c]))
        })
        .collect();
    format!(
        "UPDATE {t} x SET {} \
         FROM UNNEST($1::uuid[], $2::text[]) AS i(auth_user_id, email) \
         WHERE lower(x.{e}) = lower(i.email) AND x.{k} IS NOT NULL \
           AND x.{k} IS DISTINCT FROM {} AND NOT coalesce({}, false) \
         RETURNING x.{k}::uuid, i.auth_user_id, \
           (SELECT o.{e}::text FROM {t} o WHERE o.{k} = x.{k})",
        sets.join(", "),
        key_of(m, types, "i.auth_user_id"),
        active(m, "x")
    )
}

/// The status a row of `a` stands on: active or not, and the reason column if any.
fn status_of(m: &TargetTable, a: &str) -> String {
    match &m.reason {
        Some(r) => format!("{}, {a}.{}", active(m, a), q(r)),
        None => format!("{}, NULL", active(m, a)),
    }
}
