//! The watermark guard, the first statement of every apply attempt: moves each user's
//! watermarks forward, or finds the user's events stale, and row-locks the user until
//! commit.

use super::target_table::TargetTableSql;
use crate::decide::{Intent, Planned, Reason, UserBatch};
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
/// newer, and the data watermark to the newest upsert if it is newer, and row-locks the user
/// until commit. Users for which neither moved are not returned: their events are stale.
pub(super) async fn advance_watermarks(
    tx: &mut PgConnection,
    planned: &[Planned],
    users: &[UserBatch],
    set: &[usize],
    target_table: Option<&TargetTableSql>,
) -> Result<Guarded, sqlx::Error> {
    let sql = target_table.map_or(ADVANCE_SQL.as_str(), |m| m.advance.as_str());
    let mut guarded = Guarded {
        advanced: HashMap::new(),
        unlinked: false,
    };
    let mut round = set.to_vec();
    // A user missed in one round has a committed watermark row when the next statement
    // takes its snapshot, and watermark rows are never deleted: the second round settles it.
    // It locks after the first round's users, out of id order: a cycle then needs a third
    // transaction inserting that user meanwhile, and a deadlock is retried (`classify`).
    for _ in 0..MAX_ROUNDS {
        let missed = guard_round(tx, planned, users, &round, sql, &mut guarded).await?;
        if missed.is_empty() {
            return Ok(guarded);
        }
        round = set
            .iter()
            .copied()
            .filter(|&u| missed.contains(&planned[users[u].newest].user_id))
            .collect();
    }
    Err(sqlx::Error::Protocol(format!(
        "the watermark guard missed {} users {MAX_ROUNDS} times",
        round.len()
    )))
}

const MAX_ROUNDS: usize = 3;

/// One guard statement over `set`; returns the users it missed (see `advance_sql`).
async fn guard_round(
    tx: &mut PgConnection,
    planned: &[Planned],
    users: &[UserBatch],
    set: &[usize],
    sql: &str,
    guarded: &mut Guarded,
) -> Result<HashSet<Uuid>, sqlx::Error> {
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
    let mut absent = HashSet::new();
    for r in &rows {
        match r.get::<i16, _>(1) {
            ABSENT => {
                absent.insert(r.get(0));
            }
            UNLINKED => guarded.unlinked |= r.get::<bool, _>(7),
            change => {
                let reason: Option<String> = r.get(4);
                let advanced = Advanced {
                    status: change & 1 != 0,
                    data: change & 2 != 0,
                    prev_active: r.get(2),
                    prev_reason: r
                        .get::<Option<String>, _>(6)
                        .as_deref()
                        .and_then(Reason::parse),
                    active: r.get(3),
                    reason: reason.as_deref().and_then(Reason::parse),
                    status_ts: r.get(5),
                };
                guarded.advanced.insert(r.get(0), advanced);
            }
        }
    }
    absent.retain(|id| !guarded.advanced.contains_key(id));
    Ok(absent)
}

/// The kinds of the rows `advance_sql` returns besides the users it moved (1 to 3).
const ABSENT: i16 = -1;
const UNLINKED: i16 = -2;

static ADVANCE_SQL: LazyLock<String> =
    LazyLock::new(|| advance_sql("SELECT 1 FROM users n WHERE n.auth_user_id IS NULL"));

// S: the incoming newest event is newer than the stored status; D: the incoming upsert is
// newer than the stored fields. Row comparisons give the total order of
// `decide::EventKey` (timestamp, kind rank, digest).
//
// UPDATE the users that have a watermark, then INSERT the rest: `INSERT ... ON CONFLICT DO
// UPDATE` locks an existing row first (a `Heap/LOCK` WAL record, about 56 B an event)
// and then writes its new version; a plain UPDATE locks by writing it. Its WHERE leaves a
// user whose events are stale untouched (no lock, no WAL), and is re-checked on the newest
// version of a row another transaction changed meanwhile (EvalPlanQual): an event that a
// concurrent commit made stale touches nothing. `last_change`, `prev_active` and
// `prev_reason` let RETURNING say what moved. The UPDATE locks rows in the order of its
// join's outer side: `t` in array order with the nested loops the session asks for, or
// the primary key in order where the table is too small for an index lookup to pay; the
// attempt's transaction turns sequential scans off, which would lock in heap order.
//
// `probe` reads each user's watermark once in the statement's snapshot: the UPDATE takes
// only the users whose events are newer there (a stale one costs that one lookup), the
// INSERT those without a watermark.
//
// The INSERT takes the users without a watermark in the statement's snapshot. One that
// another transaction inserted meanwhile (a replica, a batch in flight) is skipped by ON
// CONFLICT DO NOTHING: it comes back as ABSENT without having moved, and the caller runs the
// statement again for it, whose snapshot sees the committed row. The rows come in order:
// the updated users, the inserted ones, the absent ones, then one UNLINKED row.
//
// `unlinked`, the rows the target has without an auth id, is an uncorrelated EXISTS,
// evaluated once per statement: while there are none (the steady state) the adoption
// statement is skipped, a round trip less per transaction. It reads the statement's
// snapshot, taken before the guard waited on any row lock (a replica, an import, a
// backend's transaction holding a user). A row the backend inserted meanwhile (a sign-up
// on its side racing the auth system's event) would be missed, and the event would insert
// a second row instead of adopting it. So a statement that ran longer than `WAITED` (the
// last row is computed after every wait) reports `unlinked` whatever its snapshot says,
// and the adoption statement, with a snapshot of its own, decides.
const WAITED: &str = "interval '10 milliseconds'";

pub(crate) fn advance_sql(unlinked: &str) -> String {
    let s = "((w.event_ts, w.event_rank, w.event_digest) < (t.ts, t.rank, t.digest))";
    let d = "(t.d_ts IS NOT NULL AND (w.data_ts IS NULL \
             OR (w.data_ts, w.data_rank, w.data_digest) < (t.d_ts, t.d_rank, t.d_digest)))";
    let returned = "w.auth_user_id, w.last_change, w.prev_active, w.status_active, \
                    w.status_reason, w.event_ts, w.prev_reason";
    format!(
        "WITH t AS (SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::int2[], \
             $4::int8[], $5::bool[], $6::text[], $7::timestamptz[], $8::int2[], $9::int8[]) \
           AS t(auth_user_id, ts, rank, digest, active, reason, d_ts, d_rank, d_digest)), \
         probe AS (SELECT t.*, w.auth_user_id IS NULL AS user_sync_absent, \
             w.auth_user_id IS NOT NULL AND ({s} OR {d}) AS user_sync_fresh \
           FROM t LEFT JOIN user_watermarks w ON w.auth_user_id = t.auth_user_id), \
         moved AS (UPDATE user_watermarks w SET \
           event_ts      = CASE WHEN {s} THEN t.ts     ELSE w.event_ts END, \
           event_rank    = CASE WHEN {s} THEN t.rank   ELSE w.event_rank END, \
           event_digest  = CASE WHEN {s} THEN t.digest ELSE w.event_digest END, \
           status_active = CASE WHEN {s} THEN t.active ELSE w.status_active END, \
           status_reason = CASE WHEN {s} THEN t.reason ELSE w.status_reason END, \
           data_ts       = CASE WHEN {d} THEN t.d_ts     ELSE w.data_ts END, \
           data_rank     = CASE WHEN {d} THEN t.d_rank   ELSE w.data_rank END, \
           data_digest   = CASE WHEN {d} THEN t.d_digest ELSE w.data_digest END, \
           last_change   = (CASE WHEN {s} THEN 1 ELSE 0 END) + (CASE WHEN {d} THEN 2 ELSE 0 END), \
           prev_active   = w.status_active, \
           prev_reason   = w.status_reason, \
           updated_at    = now() \
           FROM probe t WHERE t.user_sync_fresh AND w.auth_user_id = t.auth_user_id \
             AND ({s} OR {d}) \
           RETURNING {returned}), \
         added AS (INSERT INTO user_watermarks AS w (auth_user_id, event_ts, event_rank, \
             event_digest, status_active, status_reason, data_ts, data_rank, data_digest, \
             last_change, prev_active, prev_reason) \
           SELECT t.auth_user_id, t.ts, t.rank, t.digest, t.active, t.reason, t.d_ts, \
             t.d_rank, t.d_digest, CASE WHEN t.d_ts IS NULL THEN 1 ELSE 3 END, NULL::boolean, \
             NULL::text \
           FROM probe t WHERE t.user_sync_absent \
           ON CONFLICT (auth_user_id) DO NOTHING RETURNING {returned}) \
         SELECT *, NULL::boolean FROM moved \
         UNION ALL SELECT *, NULL FROM added \
         UNION ALL SELECT auth_user_id, {ABSENT}::int2, NULL, NULL, NULL, NULL, NULL, NULL \
           FROM probe WHERE user_sync_absent \
         UNION ALL SELECT NULL, {UNLINKED}::int2, NULL, NULL, NULL, NULL, NULL, \
           EXISTS ({unlinked}) OR clock_timestamp() > statement_timestamp() + {WAITED}"
    )
}
