//! The audit trail: what each event did to its user and why, written set-based in the
//! transaction of the change it explains, pruned by age in the background.

use super::Store;
use super::trail::Entry;
use super::trail_copy::{self, COPY_SQL, Line, Via};
use crate::decide::trail_code::{self, ReasonKind};
use crate::decide::{Decision, Planned, UserRow};
use crate::redact::redact;
use sqlx::{PgConnection, Row};
use std::collections::HashMap;
use time::OffsetDateTime;
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

/// One trail line with its values, whatever produced it.
struct TrailRow<'a> {
    user: Uuid,
    event_id: Option<&'a str>,
    event_type: &'a str,
    event_ts: OffsetDateTime,
    received_at: OffsetDateTime,
    decision: Decision,
    reason: ReasonKind,
    /// The time the reason refers to (`ReasonKind`).
    about: Option<OffsetDateTime>,
    /// Words that cannot be derived (`ReasonKind::Text`).
    text: Option<&'a str>,
    changed: i16,
}

/// The trail's one write, set-based: a binary COPY (`trail_copy`); the usual line is its
/// fixed-width columns only.
async fn insert(
    conn: &mut PgConnection,
    rows: &[TrailRow<'_>],
    via: &Via,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    // Stored words come from errors and addresses, not from the code: masked as logs are,
    // so no hash that one quotes is ever written.
    let texts: Vec<Option<String>> = rows.iter().map(|r| r.text.map(redact)).collect();
    let lines: Vec<Line> = rows
        .iter()
        .zip(&texts)
        .map(|(r, text)| {
            let (event_id, event_key) = trail_code::split_event_id(r.event_id);
            Line {
                received_at: r.received_at,
                event_ts: r.event_ts,
                user: r.user,
                event_id,
                code: trail_code::encode(r.event_type, r.decision, r.reason),
                changed: r.changed,
                about: r.about,
                event_key,
                event_type_text: (trail_code::event_type_code(r.event_type) == 0)
                    .then_some(r.event_type),
                reason: text.as_deref(),
            }
        })
        .collect();
    if !via.copy(conn).await? {
        return trail_copy::insert(conn, &lines).await;
    }
    // Encoded before the COPY starts: between its start and its end the session counts as
    // running a statement, which no idle-in-transaction timeout ends.
    let stream = trail_copy::binary(&lines);
    let mut copy = conn.copy_in_raw(COPY_SQL).await.inspect_err(|e| {
        via.refused(e);
    })?;
    if let Err(e) = copy.send(stream).await {
        copy.abort("the trail's lines could not be sent").await?;
        return Err(e);
    }
    copy.finish().await?;
    Ok(())
}

/// Writes an attempt's entries, in its transaction.
pub(crate) async fn write(
    tx: &mut PgConnection,
    planned: &[Planned],
    audit: &Audit<'_>,
    entries: &[Entry],
    via: &Via,
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
                reason: e.reason,
                about: e.about,
                text: e.text.as_deref(),
                changed: e.changed,
            }
        })
        .collect();
    insert(&mut *tx, &rows, via).await
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

/// Rows pruned per statement: small enough that a prune never holds locks for long.
const PRUNE_BATCH: i64 = 5_000;

impl Store {
    pub async fn audit_dead_letters(&self, entries: &[DeadLetterEntry]) -> Result<(), sqlx::Error> {
        // Called for every batch, nearly all without dead letters: no connection for them,
        // which batches in flight may all hold.
        if entries.is_empty() {
            return Ok(());
        }
        let rows: Vec<TrailRow> = entries
            .iter()
            .map(|e| TrailRow {
                user: e.user_id,
                event_id: e.event_id.as_deref(),
                event_type: e.event_type,
                event_ts: e.event_ts,
                received_at: e.received_at,
                decision: Decision::DeadLettered,
                reason: ReasonKind::Text,
                about: None,
                text: Some(&e.reason),
                changed: 0,
            })
            .collect();
        let mut conn = self.pool().acquire().await?;
        match insert(&mut conn, &rows, &self.trail_via).await {
            // Refused for row-level security: no transaction to roll back, so at once.
            Err(e) if self.trail_via.refused(&e) => insert(&mut conn, &rows, &self.trail_via).await,
            done => done,
        }
    }

    /// Deletes trail lines older than `days` from both tables (the release before still
    /// writes `audit_log`), a few thousand per statement; returns how many.
    pub async fn prune_audit(&self, days: u32) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        for (table, time) in [("audit_trail", "received_at"), ("audit_log", "recorded_at")] {
            let sql = format!(
                "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} \
                 WHERE {time} < now() - make_interval(days => $1) LIMIT $2))"
            );
            loop {
                let n = sqlx::query(&sql)
                    .bind(days as i32)
                    .bind(PRUNE_BATCH)
                    .execute(self.pool())
                    .await?
                    .rows_affected();
                total += n;
                if n < PRUNE_BATCH as u64 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok(total)
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
}
