//! The watermark guard, the first statement of every apply attempt: moves each user's
//! watermarks forward, or finds the user's events stale, and row-locks the user until
//! commit.

use super::target_table::TargetTableSql;
use crate::decide::{Intent, Planned, Reason, UserBatch};
use sqlx::{PgConnection, Row};
use std::collections::HashMap;
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
// `decide::EventKey` (timestamp, kind rank, digest). A user whose watermark in the
// statement's snapshot is already as new as the events is left out before the upsert:
// watermarks only move forward, so stale then is stale at commit, and ON CONFLICT would
// lock the row (a WAL record, and a whole page after each checkpoint) to change nothing.
// The WHERE of the update makes an event that a concurrent commit made stale touch
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
    // The same test as S or D on the snapshot's watermark, before any row is locked.
    let fresh = "((o.event_ts, o.event_rank, o.event_digest) < (t.ts, t.rank, t.digest) \
                 OR (t.d_ts IS NOT NULL AND (o.data_ts IS NULL \
                 OR (o.data_ts, o.data_rank, o.data_digest) < (t.d_ts, t.d_rank, t.d_digest))))";
    format!(
        "INSERT INTO user_watermarks AS w (auth_user_id, event_ts, event_rank, event_digest, \
           status_active, status_reason, data_ts, data_rank, data_digest, last_change, prev_active, prev_reason) \
         SELECT t.*, CASE WHEN t.d_ts IS NULL THEN 1 ELSE 3 END, NULL::boolean, NULL::text \
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::int2[], $4::int8[], $5::bool[], \
                     $6::text[], $7::timestamptz[], $8::int2[], $9::int8[]) \
           AS t(auth_user_id, ts, rank, digest, active, reason, d_ts, d_rank, d_digest) \
         WHERE NOT EXISTS (SELECT 1 FROM user_watermarks o \
           WHERE o.auth_user_id = t.auth_user_id AND NOT {fresh}) \
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
