//! The row statements of one apply attempt, each set-based over the batch and run after
//! the watermark guard (`guard`): adoption of legacy rows, the email-conflict check, the
//! row upsert and the status update.

use super::guard::Advanced;
use super::target_table::{Param, TargetTableSql};
use crate::decide::{Reason, UserRow};
use crate::redact::PasswordHash;
use crate::target_table::cased;
use sqlx::{PgConnection, Row};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use time::OffsetDateTime;
use uuid::Uuid;

/// The row's email as the email column holds it: in a target column's case (cased by
/// user-sync, so the same string compares equal under `lower()` in any collation).
pub(super) fn email<'a>(row: &'a UserRow, target_table: Option<&TargetTableSql>) -> Cow<'a, str> {
    match target_table.and_then(|m| m.email_case) {
        Some(case) => Cow::Owned(cased(&row.email, case)),
        None => Cow::Borrowed(&row.email),
    }
}

/// Links rows the backend had before the sync (same email, no auth id) to the auth user,
/// unless that user already has a row of its own; returns the users it linked.
pub(super) async fn adopt(
    tx: &mut PgConnection,
    rows: &[(Uuid, UserRow)],
    target_table: Option<&TargetTableSql>,
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let emails: Vec<Cow<str>> = rows.iter().map(|r| email(&r.1, target_table)).collect();
    let adopted: Vec<Uuid> =
        sqlx::query_scalar(target_table.map_or(ADOPT_SQL, |m| m.adopt.as_str()))
            .bind(&ids)
            .bind(&emails)
            .fetch_all(&mut *tx)
            .await?;
    Ok(adopted.into_iter().collect())
}

// The uncorrelated EXISTS is a one-time filter: once every row has an auth id (the steady
// state), the statement reads one entry of an empty partial index instead of probing two
// indexes for each row of the batch.
// `u.auth_user_id IS NULL` on the target row itself: a concurrent transaction (another
// batch in flight, a replica) may link the same row first. Waiting on its row lock, this
// statement re-checks only its outer conditions on the committed row; the sub-selects still
// read the statement's snapshot, where the row is unlinked, and without this condition the
// row was relinked to a second auth user, leaving the first, applied, without a row.
const ADOPT_SQL: &str = "UPDATE users u SET auth_user_id = i.auth_user_id, updated_at = now() \
         FROM UNNEST($1::uuid[], $2::text[]) AS i(auth_user_id, email) \
         WHERE u.auth_user_id IS NULL \
           AND EXISTS (SELECT 1 FROM users n WHERE n.auth_user_id IS NULL) \
           AND u.id = (SELECT l.id FROM users l \
                       WHERE l.auth_user_id IS NULL AND lower(l.email) = lower(i.email) \
                       ORDER BY l.is_active DESC, l.id LIMIT 1) \
           AND NOT EXISTS (SELECT 1 FROM users x WHERE x.auth_user_id = i.auth_user_id) \
         RETURNING i.auth_user_id";

/// The users whose row would become active with an email another active row holds.
pub(super) async fn email_conflicts(
    tx: &mut PgConnection,
    rows: &[(Uuid, UserRow)],
    target_table: Option<&TargetTableSql>,
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let (ids, emails): (Vec<Uuid>, Vec<Cow<str>>) = rows
        .iter()
        .filter(|r| r.1.is_active)
        .map(|r| (r.0, email(&r.1, target_table)))
        .unzip();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let found = sqlx::query(target_table.map_or(CONFLICTS_SQL, |m| m.conflicts.as_str()))
        .bind(&ids)
        .bind(&emails)
        .fetch_all(&mut *tx)
        .await?;
    Ok(found.iter().map(|r| r.get(0)).collect())
}

const CONFLICTS_SQL: &str = "SELECT i.auth_user_id FROM UNNEST($1::uuid[], $2::text[]) AS i(auth_user_id, email) \
     WHERE EXISTS (SELECT 1 FROM users c WHERE lower(c.email) = lower(i.email) \
                   AND c.is_active AND c.auth_user_id IS DISTINCT FROM i.auth_user_id)";

/// Inserts or overwrites the rows. Returns, per user, whether the row is new and (with
/// `changes`, for the trail) which fields an existing row had different (`audit` bits).
pub(super) async fn upsert(
    tx: &mut PgConnection,
    rows: &[(Uuid, UserRow)],
    target_table: Option<&TargetTableSql>,
) -> Result<HashMap<Uuid, (bool, i16)>, sqlx::Error> {
    let mut written = HashMap::new();
    // A row missed in one round (inserted or deleted by someone else meanwhile) is seen as
    // it is by the next statement's snapshot.
    let mut missed = upsert_round(tx, rows, target_table, &mut written).await?;
    for _ in 0..2 {
        if missed.is_empty() {
            return Ok(written);
        }
        missed = upsert_round(tx, &missed, target_table, &mut written).await?;
    }
    match missed.len() {
        0 => Ok(written),
        n => Err(sqlx::Error::Protocol(format!(
            "the row upsert missed {n} users three times"
        ))),
    }
}

/// One upsert statement: adds each row it wrote to `written` (inserted, changed fields);
/// returns the rows it missed, neither written nor found unchanged.
async fn upsert_round(
    tx: &mut PgConnection,
    rows: &[(Uuid, UserRow)],
    target_table: Option<&TargetTableSql>,
    written: &mut HashMap<Uuid, (bool, i16)>,
) -> Result<Vec<(Uuid, UserRow)>, sqlx::Error> {
    let col = |f: fn(&UserRow) -> Option<&str>| -> Vec<Option<&str>> {
        rows.iter().map(|r| f(&r.1)).collect()
    };
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let services: Vec<String> = rows
        .iter()
        .map(|r| serde_json::to_string(&r.1.allowed_services).expect("strings serialise"))
        .collect();
    let active: Vec<bool> = rows.iter().map(|r| r.1.is_active).collect();
    let ts: Vec<OffsetDateTime> = rows.iter().map(|r| r.1.source_updated_at).collect();
    let sql = match target_table {
        Some(m) => m.upsert_changes.as_str(),
        None => UPSERT_CHANGES_SQL.as_str(),
    };
    let query = sqlx::query(sql)
        .bind(&ids)
        .bind(col(|r| Some(r.email.as_str())))
        .bind(col(|r| r.first_name.as_deref()))
        .bind(col(|r| r.last_name.as_deref()))
        .bind(col(|r| r.password_hash.as_ref().map(PasswordHash::as_str)))
        .bind(col(|r| r.role.as_deref()))
        .bind(&services)
        .bind(&active)
        .bind(col(|r| r.deactivation_reason.map(Reason::as_str)));
    // The own table also records the event time; a target table binds its constants.
    let query = match target_table {
        None => query.bind(&ts),
        Some(m) => m.params.iter().fold(query, |q, p| match p {
            Param::Text(t) => q.bind(t.clone()),
            Param::Texts(t) => q.bind(t.clone()),
            // Over-long values were refused before the batch (`TargetTable::refuses`);
            // one that got here anyway is written whole, for the database to refuse.
            Param::Rendered(c) => q.bind(
                rows.iter()
                    .map(|r| c.render(&r.1).unwrap_or_else(|_| c.unlimited(&r.1)))
                    .collect::<Vec<Option<String>>>(),
            ),
        }),
    };
    let returned = query.fetch_all(&mut *tx).await?;
    let mut settled = HashSet::new();
    for r in &returned {
        let id: Uuid = r.get(0);
        if let Some(inserted) = r.get::<Option<bool>, _>(1) {
            written.insert(id, (inserted, r.get::<Option<i16>, _>(2).unwrap_or(0)));
        }
        settled.insert(id);
    }
    Ok(rows
        .iter()
        .filter(|r| !settled.contains(&r.0))
        .cloned()
        .collect())
}

/// The columns the upsert writes, and the batch row's value of each (`i`).
const UPSERT_COLUMNS: [(&str, &str); 10] = [
    ("auth_user_id", "i.auth_user_id"),
    ("email", "i.email"),
    ("first_name", "i.first_name"),
    ("last_name", "i.last_name"),
    ("password_hash", "i.password_hash"),
    ("role", "i.role"),
    (
        "allowed_services",
        "ARRAY(SELECT jsonb_array_elements_text(i.services::jsonb))",
    ),
    ("is_active", "i.active"),
    ("deactivation_reason", "i.reason"),
    ("source_updated_at", "i.ts"),
];

// UPDATE the rows that exist, then INSERT the rest (see `upsert_sql`). A row whose every
// column already holds the batch's value writes no new version (a rewrite of the same
// state at the same time: a redelivery past the guard, a backfill of the same fields).
// A sub-select in RETURNING runs on the statement's snapshot, so it reads each row as it
// was before this statement: which fields changed (for the trail, and to tell `unchanged`
// from `applied`) costs no extra round trip. The bits are `audit::FIELDS` in order.
static UPSERT_CHANGES_SQL: LazyLock<String> = LazyLock::new(|| {
    let bits: Vec<String> = crate::store::audit::FIELDS
        .iter()
        .enumerate()
        .map(|(i, f)| {
            format!(
                "(CASE WHEN o.{f} IS DISTINCT FROM u.{f} THEN {} ELSE 0 END)",
                1 << i
            )
        })
        .collect();
    let values: Vec<String> = UPSERT_COLUMNS
        .iter()
        .map(|(c, v)| format!("{v} AS {c}"))
        .collect();
    let compared: Vec<&str> = UPSERT_COLUMNS[1..].iter().map(|c| c.0).collect();
    let sets: Vec<String> = compared
        .iter()
        .map(|c| format!("{c} = n.{c}"))
        .chain(["updated_at = now()".to_string()])
        .collect();
    super::upsert_sql::upsert_sql(&super::upsert_sql::Upsert {
        table: "users",
        key: "auth_user_id",
        batch: "UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                $6::text[], $7::text[], $8::bool[], $9::text[], $10::timestamptz[]) \
                AS i(auth_user_id, email, first_name, last_name, password_hash, role, \
                services, active, reason, ts)",
        values: &values.join(", "),
        columns: &UPSERT_COLUMNS.map(|c| c.0).join(", "),
        sets: &sets.join(", "),
        olds: &compared
            .iter()
            .map(|c| format!("u.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        news: &compared
            .iter()
            .map(|c| format!("n.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        changed: &bits.join(" | "),
    })
});

/// Gives existing rows the status their newest event set; returns the users that had one,
/// each with whether its row's status changed (the backend may have set it meanwhile).
pub(super) async fn update_status(
    tx: &mut PgConnection,
    ids: &[Uuid],
    advanced: &HashMap<Uuid, Advanced>,
    target_table: Option<&TargetTableSql>,
) -> Result<Vec<(Uuid, bool)>, sqlx::Error> {
    let active: Vec<bool> = ids.iter().map(|id| advanced[id].active).collect();
    let reasons: Vec<Option<&str>> = ids
        .iter()
        .map(|id| advanced[id].reason.map(Reason::as_str))
        .collect();
    let ts: Vec<OffsetDateTime> = ids.iter().map(|id| advanced[id].status_ts).collect();
    let rows = sqlx::query(target_table.map_or(UPDATE_STATUS_SQL, |m| m.update_status.as_str()))
        .bind(ids)
        .bind(&active)
        .bind(&reasons)
        .bind(&ts)
        .fetch_all(&mut *tx)
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

// The sub-select in RETURNING reads the row as the statement's snapshot had it (see
// `UPSERT_CHANGES_SQL`).
const UPDATE_STATUS_SQL: &str = "UPDATE users u SET is_active = s.active, \
       deactivation_reason = s.reason, source_updated_at = s.ts, updated_at = now() \
     FROM UNNEST($1::uuid[], $2::bool[], $3::text[], $4::timestamptz[]) \
       AS s(auth_user_id, active, reason, ts) \
     WHERE u.auth_user_id = s.auth_user_id \
     RETURNING u.auth_user_id, coalesce((SELECT (o.is_active, o.deactivation_reason) \
       IS DISTINCT FROM (u.is_active, u.deactivation_reason) \
       FROM users o WHERE o.auth_user_id = u.auth_user_id), true)";
