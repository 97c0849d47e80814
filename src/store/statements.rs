//! The statements of one apply attempt, each set-based over the batch: the watermark
//! guard, adoption of legacy rows, the email-conflict check, the row upsert and the
//! status update.

use super::target_table::{Param, TargetTableSql};
use crate::decide::{Intent, Planned, Reason, UserBatch, UserRow};
use crate::redact::PasswordHash;
use sqlx::{PgConnection, Row};
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use time::OffsetDateTime;
use uuid::Uuid;

/// What the guarded watermark upsert did for one user.
pub(crate) struct Advanced {
    pub status: bool,
    pub data: bool,
    pub prev_active: Option<bool>,
    pub prev_reason: Option<Reason>,
    pub active: bool,
    pub reason: Option<Reason>,
    pub status_ts: OffsetDateTime,
}

/// What the guard returned: the users it moved, and whether the table has rows without an
/// auth id (rows the backend made itself, which an event may adopt).
pub(crate) struct Guarded {
    pub advanced: HashMap<Uuid, Advanced>,
    pub unlinked: bool,
}

/// The guard. For each user, moves the status watermark to the newest event if it is
/// newer, and the data watermark to the newest upsert if it is newer, in one statement
/// that row-locks the user until commit. Users for which neither moved are not returned:
/// their events are stale.
pub(super) async fn advance_watermarks(
    tx: &mut PgConnection,
    planned: &[Planned],
    users: &[UserBatch],
    set: &[usize],
    target_table: Option<&TargetTableSql>,
) -> Result<Guarded, sqlx::Error> {
    let newest: Vec<&Planned> = set.iter().map(|&u| &planned[users[u].newest]).collect();
    let upsert: Vec<Option<&Planned>> = set
        .iter()
        .map(|&u| users[u].upsert.map(|i| &planned[i]))
        .collect();
    let ids: Vec<Uuid> = newest.iter().map(|p| p.user_id).collect();
    // The statement locks rows in array order, and two transactions that both lock in
    // ascending user id cannot wait on each other in a cycle: replicas, and a worker's
    // batches in flight, share users without deadlocking. `decide::reduce` sorts by user
    // id (Uuid orders bytewise, as Postgres's uuid does) and every set is a subsequence.
    debug_assert!(ids.is_sorted(), "users locked in id order");
    let ts: Vec<OffsetDateTime> = newest.iter().map(|p| p.key.timestamp).collect();
    let ranks: Vec<i16> = newest.iter().map(|p| p.key.rank).collect();
    let digests: Vec<i64> = newest.iter().map(|p| p.key.digest).collect();
    let (active, reasons): (Vec<bool>, Vec<Option<&str>>) = newest
        .iter()
        .map(|p| match &p.intent {
            Intent::Upsert(row) => (row.is_active, row.deactivation_reason.map(Reason::as_str)),
            Intent::Deactivate(r) => (false, Some(r.as_str())),
        })
        .unzip();
    let d_ts: Vec<Option<OffsetDateTime>> =
        upsert.iter().map(|p| p.map(|p| p.key.timestamp)).collect();
    let d_rank: Vec<Option<i16>> = upsert.iter().map(|p| p.map(|p| p.key.rank)).collect();
    let d_digest: Vec<Option<i64>> = upsert.iter().map(|p| p.map(|p| p.key.digest)).collect();
    let sql = target_table.map_or(ADVANCE_SQL.as_str(), |m| m.advance.as_str());
    let rows = sqlx::query(sql)
        .bind(&ids)
        .bind(&ts)
        .bind(&ranks)
        .bind(&digests)
        .bind(&active)
        .bind(&reasons)
        .bind(&d_ts)
        .bind(&d_rank)
        .bind(&d_digest)
        .fetch_all(&mut *tx)
        .await?;
    // Any row: the last ones are returned after every lock wait (see `advance_sql`).
    let unlinked = rows.iter().any(|r| r.get::<bool, _>(6));
    let advanced = rows
        .iter()
        .map(|r| {
            let change: i16 = r.get(1);
            let reason: Option<String> = r.get(4);
            let advanced = Advanced {
                status: change & 1 != 0,
                data: change & 2 != 0,
                prev_active: r.get(2),
                prev_reason: r
                    .get::<Option<String>, _>(7)
                    .as_deref()
                    .and_then(Reason::parse),
                active: r.get(3),
                reason: reason.as_deref().and_then(Reason::parse),
                status_ts: r.get(5),
            };
            (r.get(0), advanced)
        })
        .collect();
    Ok(Guarded { advanced, unlinked })
}

static ADVANCE_SQL: LazyLock<String> =
    LazyLock::new(|| advance_sql("SELECT 1 FROM users n WHERE n.auth_user_id IS NULL"));

// S: the incoming newest event is newer than the stored status; D: the incoming upsert is
// newer than the stored fields. Row comparisons give the total order of
// `decide::EventKey` (timestamp, kind rank, digest). The WHERE makes a stale event touch
// nothing; `last_change`, `prev_active` and `prev_reason` let RETURNING say what moved. `unlinked`, the
// rows the target has without an auth id, is an uncorrelated EXISTS, evaluated once per
// statement: while there are none (the steady state) the adoption statement is skipped,
// a round trip less per transaction.
//
// The EXISTS reads the statement's snapshot, taken before the guard waited on any row lock
// (a replica, an import, a backend's transaction holding a user). A row the backend
// inserted meanwhile (a sign-up on its side racing the auth system's event) would be
// missed, and the event would insert a second row instead of adopting it. So a statement
// that ran longer than `WAITED` reports `unlinked` whatever its snapshot says, and the
// adoption statement, with a snapshot of its own, decides: the window is then no wider
// than when adoption always ran after the guard.
const WAITED: &str = "interval '10 milliseconds'";

pub(crate) fn advance_sql(unlinked: &str) -> String {
    let s = "((w.event_ts, w.event_rank, w.event_digest) \
             < (EXCLUDED.event_ts, EXCLUDED.event_rank, EXCLUDED.event_digest))";
    let d = "(EXCLUDED.data_ts IS NOT NULL AND (w.data_ts IS NULL \
             OR (w.data_ts, w.data_rank, w.data_digest) \
             < (EXCLUDED.data_ts, EXCLUDED.data_rank, EXCLUDED.data_digest)))";
    format!(
        "INSERT INTO user_watermarks AS w (auth_user_id, event_ts, event_rank, event_digest, \
           status_active, status_reason, data_ts, data_rank, data_digest, last_change, prev_active, prev_reason) \
         SELECT t.*, CASE WHEN t.d_ts IS NULL THEN 1 ELSE 3 END, NULL::boolean, NULL::text \
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::int2[], $4::int8[], $5::bool[], \
                     $6::text[], $7::timestamptz[], $8::int2[], $9::int8[]) \
           AS t(auth_user_id, ts, rank, digest, active, reason, d_ts, d_rank, d_digest) \
         ON CONFLICT (auth_user_id) DO UPDATE SET \
           event_ts      = CASE WHEN {s} THEN EXCLUDED.event_ts      ELSE w.event_ts END, \
           event_rank    = CASE WHEN {s} THEN EXCLUDED.event_rank    ELSE w.event_rank END, \
           event_digest  = CASE WHEN {s} THEN EXCLUDED.event_digest  ELSE w.event_digest END, \
           status_active = CASE WHEN {s} THEN EXCLUDED.status_active ELSE w.status_active END, \
           status_reason = CASE WHEN {s} THEN EXCLUDED.status_reason ELSE w.status_reason END, \
           data_ts       = CASE WHEN {d} THEN EXCLUDED.data_ts       ELSE w.data_ts END, \
           data_rank     = CASE WHEN {d} THEN EXCLUDED.data_rank     ELSE w.data_rank END, \
           data_digest   = CASE WHEN {d} THEN EXCLUDED.data_digest   ELSE w.data_digest END, \
           last_change   = (CASE WHEN {s} THEN 1 ELSE 0 END) + (CASE WHEN {d} THEN 2 ELSE 0 END), \
           prev_active   = w.status_active, \
           prev_reason   = w.status_reason, \
           updated_at    = now() \
         WHERE {s} OR {d} \
         RETURNING auth_user_id, last_change, prev_active, status_active, status_reason, \
           event_ts, EXISTS ({unlinked}) OR clock_timestamp() > statement_timestamp() + {WAITED}, \
           prev_reason"
    )
}

/// Links rows the backend had before the sync (same email, no auth id) to the auth user,
/// unless that user already has a row of its own; returns the users it linked.
pub(super) async fn adopt(
    tx: &mut PgConnection,
    rows: &[(Uuid, UserRow)],
    target_table: Option<&TargetTableSql>,
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let emails: Vec<&str> = rows.iter().map(|r| r.1.email.as_str()).collect();
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
    let (ids, emails): (Vec<Uuid>, Vec<&str>) = rows
        .iter()
        .filter(|r| r.1.is_active)
        .map(|r| (r.0, r.1.email.as_str()))
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
        }),
    };
    let returned = query.fetch_all(&mut *tx).await?;
    Ok(returned
        .iter()
        .map(|r| {
            (
                r.get(0),
                (r.get(1), r.get::<Option<i16>, _>(2).unwrap_or(0)),
            )
        })
        .collect())
}

const UPSERT_BASE: &str = "INSERT INTO users AS u (auth_user_id, email, first_name, \
       last_name, password_hash, role, allowed_services, is_active, deactivation_reason, \
       source_updated_at) \
     SELECT i.auth_user_id, i.email, i.first_name, i.last_name, i.password_hash, i.role, \
       ARRAY(SELECT jsonb_array_elements_text(i.services::jsonb)), i.active, i.reason, i.ts \
     FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                 $7::text[], $8::bool[], $9::text[], $10::timestamptz[]) \
       AS i(auth_user_id, email, first_name, last_name, password_hash, role, services, \
            active, reason, ts) \
     ON CONFLICT (auth_user_id) DO UPDATE SET email = EXCLUDED.email, \
       first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, \
       password_hash = EXCLUDED.password_hash, role = EXCLUDED.role, \
       allowed_services = EXCLUDED.allowed_services, is_active = EXCLUDED.is_active, \
       deactivation_reason = EXCLUDED.deactivation_reason, \
       source_updated_at = EXCLUDED.source_updated_at, updated_at = now()";

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
    format!(
        "{UPSERT_BASE} RETURNING u.auth_user_id, (u.xmax = 0), \
         (SELECT ({}) FROM users o WHERE o.auth_user_id = u.auth_user_id)::int2",
        bits.join(" | ")
    )
});

/// Gives existing rows the status their newest event set; returns the users that had one.
pub(super) async fn update_status(
    tx: &mut PgConnection,
    ids: &[Uuid],
    advanced: &HashMap<Uuid, Advanced>,
    target_table: Option<&TargetTableSql>,
) -> Result<Vec<Uuid>, sqlx::Error> {
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
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

const UPDATE_STATUS_SQL: &str = "UPDATE users u SET is_active = s.active, \
       deactivation_reason = s.reason, source_updated_at = s.ts, updated_at = now() \
     FROM UNNEST($1::uuid[], $2::bool[], $3::text[], $4::timestamptz[]) \
       AS s(auth_user_id, active, reason, ts) \
     WHERE u.auth_user_id = s.auth_user_id \
     RETURNING u.auth_user_id";
