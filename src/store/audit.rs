//! The audit trail: what each event did to its user and why, written set-based in the
//! transaction of the change it explains, pruned by age in the background.

use super::Store;
use super::trail::Entry;
use crate::decide::{Decision, Intent, Outcome, Planned, Reason, UserRow};
use sqlx::{PgConnection, Row};
use std::collections::HashMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// What the pipeline knows of each event beyond its plan.
#[derive(Debug, Clone)]
pub struct EventMeta {
    pub event_id: Option<String>,
    pub event_type: &'static str,
    pub received_at: OffsetDateTime,
}

/// The trail's inputs for one batch; `None` in its place turns the trail off.
pub struct Audit<'a> {
    pub service: &'a str,
    /// Per planned index.
    pub meta: &'a [EventMeta],
    /// Planned indices that `reduce` superseded within the batch.
    pub losers: &'a [usize],
    /// Whether events that changed nothing (stale, unchanged) get a line
    /// (`pipeline::Trail::no_ops`).
    pub no_ops: bool,
}

pub(super) fn at(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Why an event had its outcome, in words for support staff. `applied_ts` is the event the
/// user's status already stands on (for stale and backfilled events).
pub(crate) fn reason(
    outcome: Outcome,
    intent: &Intent,
    service: &str,
    applied_ts: Option<OffsetDateTime>,
    inserted: bool,
) -> Option<String> {
    let revoked = || format!("{service} not in allowed services");
    let because = |r: &Reason| match r {
        Reason::Deleted => "deleted upstream".to_string(),
        Reason::AccessRevoked => revoked(),
        Reason::InactiveUpstream => "inactive upstream".to_string(),
        Reason::AbsentFromExport => "absent from a full export".to_string(),
    };
    let applied = || applied_ts.map_or("a newer event".into(), |t| format!("event of {}", at(t)));
    Some(match (outcome, intent) {
        (Outcome::Applied, _) if inserted => "new row".into(),
        (Outcome::Applied, _) => "fields updated".into(),
        (Outcome::Unchanged, _) => "nothing to change".into(),
        (Outcome::Reactivated, _) => "active again".into(),
        (Outcome::Deactivated, Intent::Deactivate(r)) => because(r),
        (Outcome::Deactivated, Intent::Upsert(row)) => row
            .deactivation_reason
            .as_ref()
            .map_or("inactive".into(), because),
        (Outcome::NotForService, _) => revoked(),
        (Outcome::Absent, _) => "deleted before this service had a row".into(),
        (Outcome::Backfilled, _) => {
            format!(
                "older than the applied {}: fields filled in, status kept",
                applied()
            )
        }
        (Outcome::Stale, _) => format!("older than the applied {}", applied()),
    })
}

/// The `users` fields whose changes the trail records, as bits in this order. Names only:
/// never a value, so never a password hash.
pub const FIELDS: [&str; 8] = [
    "email",
    "first_name",
    "last_name",
    "password_hash",
    "role",
    "allowed_services",
    "is_active",
    "deactivation_reason",
];

/// `is_active` and `deactivation_reason`: what a status-only change touches.
pub(crate) const STATUS_FIELDS: i16 = (1 << 6) | (1 << 7);

/// A new row sets every field it has.
pub(crate) fn new_row_mask(row: &UserRow) -> i16 {
    let all_but_reason: i16 = (1 << 7) - 1;
    all_but_reason
        | if row.deactivation_reason.is_some() {
            1 << 7
        } else {
            0
        }
}

/// The field names a mask stands for.
pub fn field_names(mask: i16) -> Vec<String> {
    FIELDS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, f)| f.to_string())
        .collect()
}

/// The timestamps of the events the users' status stands on.
pub(crate) async fn status_timestamps(
    tx: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, OffsetDateTime>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT auth_user_id, event_ts FROM user_watermarks WHERE auth_user_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// One trail row with its values, whatever produced it.
struct TrailRow<'a> {
    user: Uuid,
    event_id: Option<&'a str>,
    event_type: &'a str,
    event_ts: OffsetDateTime,
    received_at: OffsetDateTime,
    decision: &'a str,
    reason: Option<&'a str>,
    changed: i16,
}

/// The one INSERT of the trail, set-based.
async fn insert<'e, 'r>(
    db: impl sqlx::PgExecutor<'e>,
    rows: &[TrailRow<'r>],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&TrailRow<'r>) -> Option<&'r str>| -> Vec<Option<&'r str>> {
        rows.iter().map(f).collect()
    };
    let ids: Vec<Uuid> = rows.iter().map(|r| r.user).collect();
    let ts: Vec<OffsetDateTime> = rows.iter().map(|r| r.event_ts).collect();
    let received: Vec<OffsetDateTime> = rows.iter().map(|r| r.received_at).collect();
    let changed: Vec<i16> = rows.iter().map(|r| r.changed).collect();
    sqlx::query(
        "INSERT INTO audit_log (auth_user_id, event_id, event_type, event_ts, received_at, \
           decision, reason, changed) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], \
                              $5::timestamptz[], $6::text[], $7::text[], $8::int2[]) \
           AS x(u, i, t, ts, r, d, why, c)",
    )
    .bind(&ids)
    .bind(col(|r| r.event_id))
    .bind(col(|r| Some(r.event_type)))
    .bind(&ts)
    .bind(&received)
    .bind(col(|r| Some(r.decision)))
    .bind(col(|r| r.reason))
    .bind(&changed)
    .execute(db)
    .await?;
    Ok(())
}

/// Writes an attempt's entries, in its transaction.
pub(crate) async fn write(
    tx: &mut PgConnection,
    planned: &[Planned],
    audit: &Audit<'_>,
    entries: &[Entry],
) -> Result<(), sqlx::Error> {
    let rows: Vec<TrailRow> = entries
        .iter()
        .map(|e| {
            let meta = &audit.meta[e.planned];
            TrailRow {
                user: e.user.unwrap_or(planned[e.planned].user_id),
                event_id: meta.event_id.as_deref(),
                event_type: meta.event_type,
                event_ts: planned[e.planned].key.timestamp,
                received_at: meta.received_at,
                decision: e.decision,
                reason: e.reason.as_deref(),
                changed: e.changed,
            }
        })
        .collect();
    insert(&mut *tx, &rows).await
}

/// A dead letter whose user is known, for the trail (no table change to share a
/// transaction with: written on its own).
#[derive(Debug, Clone)]
pub struct DeadLetterEntry {
    pub user_id: Uuid,
    pub event_id: Option<String>,
    pub event_type: &'static str,
    pub event_ts: OffsetDateTime,
    pub received_at: OffsetDateTime,
    pub reason: String,
}

/// One line of a user's trail, as `explain` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrailEntry {
    pub event_id: Option<String>,
    pub event_type: String,
    #[serde(with = "time::serde::rfc3339")]
    pub event_ts: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub decision: String,
    pub reason: Option<String>,
    pub changed: Vec<String>,
}

/// Rows pruned per statement: small enough that a prune never holds locks for long.
const PRUNE_BATCH: i64 = 5_000;

impl Store {
    pub async fn audit_dead_letters(&self, entries: &[DeadLetterEntry]) -> Result<(), sqlx::Error> {
        let rows: Vec<TrailRow> = entries
            .iter()
            .map(|e| TrailRow {
                user: e.user_id,
                event_id: e.event_id.as_deref(),
                event_type: e.event_type,
                event_ts: e.event_ts,
                received_at: e.received_at,
                decision: Decision::DeadLettered.as_str(),
                reason: Some(&e.reason),
                changed: 0,
            })
            .collect();
        insert(self.pool(), &rows).await
    }

    /// Deletes trail rows older than `days`, a few thousand per statement; returns how many.
    pub async fn prune_audit(&self, days: u32) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        loop {
            let n = sqlx::query(
                "DELETE FROM audit_log WHERE ctid = ANY(ARRAY(SELECT ctid FROM audit_log \
                 WHERE recorded_at < now() - make_interval(days => $1) LIMIT $2))",
            )
            .bind(days as i32)
            .bind(PRUNE_BATCH)
            .execute(self.pool())
            .await?
            .rows_affected();
            total += n;
            if n < PRUNE_BATCH as u64 {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    /// A user's trail, newest first.
    pub async fn trail(&self, user: Uuid, limit: i64) -> Result<Vec<TrailEntry>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT event_id, event_type, event_ts, received_at, decision, reason, changed \
             FROM audit_log WHERE auth_user_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(user)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| TrailEntry {
                event_id: r.get(0),
                event_type: r.get(1),
                event_ts: r.get(2),
                received_at: r.get(3),
                decision: r.get(4),
                reason: r.get(5),
                changed: field_names(r.get(6)),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_masks_name_fields_never_values() {
        assert_eq!(
            field_names(STATUS_FIELDS),
            ["is_active", "deactivation_reason"]
        );
        assert_eq!(field_names(0), Vec::<String>::new());
        assert_eq!(field_names(1 | 8), ["email", "password_hash"]);
        let row = UserRow {
            email: "a@example.com".into(),
            first_name: None,
            last_name: None,
            password_hash: None,
            role: None,
            allowed_services: vec![],
            is_active: true,
            deactivation_reason: None,
            source_updated_at: OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(field_names(new_row_mask(&row)).len(), 7);
    }

    #[test]
    fn reasons_say_why_in_words() {
        let ts = time::macros::datetime!(2024-03-01 00:00 UTC);
        let revoke = Intent::Deactivate(Reason::AccessRevoked);
        let r = |o| reason(o, &revoke, "lms", Some(ts), false).unwrap();
        assert_eq!(r(Outcome::Deactivated), "lms not in allowed services");
        assert_eq!(r(Outcome::NotForService), "lms not in allowed services");
        assert_eq!(
            r(Outcome::Stale),
            "older than the applied event of 2024-03-01T00:00:00Z"
        );
        let deleted = Intent::Deactivate(Reason::Deleted);
        assert_eq!(
            reason(Outcome::Absent, &deleted, "lms", None, false).unwrap(),
            "deleted before this service had a row"
        );
    }
}
