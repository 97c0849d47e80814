//! Applying a reduced batch: set-based SQL in one transaction, guarded by the watermark.
//!
//! The guard is the first statement of the transaction: a conditional upsert of the
//! per-user watermark that only moves forward. It row-locks every user it touches until
//! commit, so a replica working on the same user waits and then finds itself stale; no
//! decision is made on data read outside the transaction.

use super::Store;
use crate::decide::{Intent, Outcome, Planned, Row, deactivate_outcome, upsert_outcome};
use sqlx::{PgConnection, Row as _};
use std::collections::{HashMap, HashSet};
use time::OffsetDateTime;
use uuid::Uuid;

/// What became of one planned change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventResult {
    Done(Outcome),
    /// Its email is held by another active user; a later event may free it.
    EmailConflict,
    /// The database refused this one change for good (a constraint, a value out of range).
    Rejected(String),
}

enum Attempt {
    Committed(Vec<(usize, Outcome)>),
    Conflicts(Vec<usize>),
}

impl Store {
    /// Applies changes that hold at most one per user (see `decide::reduce`). A failure that
    /// belongs to one change splits the batch until that change stands alone, so the rest
    /// commit. An error that is not about one change (connection lost, pool timeout) is
    /// returned as is; what committed before it is safe to apply again.
    pub async fn apply(&self, batch: &[Planned]) -> Result<Vec<EventResult>, sqlx::Error> {
        let mut results: Vec<Option<EventResult>> = vec![None; batch.len()];
        let mut work: Vec<Vec<usize>> = vec![(0..batch.len()).collect()];
        while let Some(set) = work.pop() {
            if set.is_empty() {
                continue;
            }
            match self.attempt(batch, &set).await {
                Ok(Attempt::Committed(outcomes)) => {
                    for (i, o) in outcomes {
                        results[i] = Some(EventResult::Done(o));
                    }
                }
                Ok(Attempt::Conflicts(conflicts)) => {
                    for &i in &conflicts {
                        results[i] = Some(EventResult::EmailConflict);
                    }
                    work.push(set.into_iter().filter(|i| !conflicts.contains(i)).collect());
                }
                Err(e) => match crate::error::per_event(&e) {
                    Some(result) if set.len() == 1 => results[set[0]] = Some(result),
                    Some(_) => {
                        let mut left = set;
                        let right = left.split_off(left.len() / 2);
                        work.push(right);
                        work.push(left);
                    }
                    None => return Err(e),
                },
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every change gets a result"))
            .collect())
    }

    async fn attempt(&self, batch: &[Planned], set: &[usize]) -> Result<Attempt, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let winners = advance_watermarks(&mut tx, batch, set).await?;
        let mut outcomes: Vec<(usize, Outcome)> = set
            .iter()
            .filter(|i| !winners.contains(&batch[**i].user_id))
            .map(|&i| (i, Outcome::Stale))
            .collect();
        let (ups, downs): (Vec<usize>, Vec<usize>) = set
            .iter()
            .copied()
            .filter(|i| winners.contains(&batch[*i].user_id))
            .partition(|i| matches!(batch[*i].intent, Intent::Upsert(_)));

        // Deactivations first: they may free an email that an upsert in this batch takes.
        if !downs.is_empty() {
            outcomes.extend(deactivate(&mut tx, batch, &downs).await?);
        }
        if !ups.is_empty() {
            let rows: Vec<(Uuid, &Row)> = ups
                .iter()
                .map(|&i| match &batch[i].intent {
                    Intent::Upsert(row) => (batch[i].user_id, row),
                    Intent::Deactivate(_) => unreachable!("partitioned above"),
                })
                .collect();
            adopt(&mut tx, &rows).await?;
            let (was_active, conflicts) = inspect(&mut tx, &rows).await?;
            let conflicts: Vec<usize> = ups
                .iter()
                .zip(&rows)
                .filter(|(_, (id, _))| conflicts.contains(id))
                .map(|(i, _)| *i)
                .collect();
            if !conflicts.is_empty() {
                tx.rollback().await?;
                return Ok(Attempt::Conflicts(conflicts));
            }
            upsert(&mut tx, &rows).await?;
            outcomes.extend(ups.iter().zip(&rows).map(|(&i, (id, row))| {
                (
                    i,
                    upsert_outcome(was_active.get(id).copied(), row.is_active),
                )
            }));
        }
        tx.commit().await?;
        Ok(Attempt::Committed(outcomes))
    }
}

/// Moves each user's watermark forward where this change is newer; returns those users.
async fn advance_watermarks(
    tx: &mut PgConnection,
    batch: &[Planned],
    set: &[usize],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = set.iter().map(|&i| batch[i].user_id).collect();
    let ts: Vec<OffsetDateTime> = set.iter().map(|&i| batch[i].key.timestamp).collect();
    let ranks: Vec<i16> = set.iter().map(|&i| batch[i].key.rank).collect();
    let digests: Vec<i64> = set.iter().map(|&i| batch[i].key.digest).collect();
    let rows = sqlx::query(
        "INSERT INTO user_watermarks AS w (auth_user_id, event_ts, event_rank, event_digest) \
         SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::int2[], $4::int8[]) \
         ON CONFLICT (auth_user_id) DO UPDATE SET event_ts = EXCLUDED.event_ts, \
           event_rank = EXCLUDED.event_rank, event_digest = EXCLUDED.event_digest, updated_at = now() \
         WHERE (w.event_ts, w.event_rank, w.event_digest) \
             < (EXCLUDED.event_ts, EXCLUDED.event_rank, EXCLUDED.event_digest) \
         RETURNING auth_user_id",
    )
    .bind(&ids)
    .bind(&ts)
    .bind(&ranks)
    .bind(&digests)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn deactivate(
    tx: &mut PgConnection,
    batch: &[Planned],
    downs: &[usize],
) -> Result<Vec<(usize, Outcome)>, sqlx::Error> {
    let reasons: Vec<_> = downs
        .iter()
        .map(|&i| match batch[i].intent {
            Intent::Deactivate(reason) => reason,
            Intent::Upsert(_) => unreachable!("partitioned by the caller"),
        })
        .collect();
    let ids: Vec<Uuid> = downs.iter().map(|&i| batch[i].user_id).collect();
    let ts: Vec<OffsetDateTime> = downs.iter().map(|&i| batch[i].key.timestamp).collect();
    let reason_text: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
    let found: HashSet<Uuid> = sqlx::query(
        "UPDATE users u SET is_active = false, deactivation_reason = d.reason, \
           source_updated_at = d.ts, updated_at = now() \
         FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) AS d(auth_user_id, reason, ts) \
         WHERE u.auth_user_id = d.auth_user_id \
         RETURNING u.auth_user_id",
    )
    .bind(&ids)
    .bind(&reason_text)
    .bind(&ts)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    Ok(downs
        .iter()
        .zip(ids.iter().zip(reasons))
        .map(|(&i, (id, reason))| (i, deactivate_outcome(found.contains(id), reason)))
        .collect())
}

/// Links rows the backend had before the sync (same email, no auth id) to the auth user,
/// unless that user already has a row of its own.
async fn adopt(tx: &mut PgConnection, rows: &[(Uuid, &Row)]) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let emails: Vec<&str> = rows.iter().map(|r| r.1.email.as_str()).collect();
    sqlx::query(
        "UPDATE users u SET auth_user_id = i.auth_user_id, updated_at = now() \
         FROM UNNEST($1::uuid[], $2::text[]) AS i(auth_user_id, email) \
         WHERE u.id = (SELECT l.id FROM users l \
                       WHERE l.auth_user_id IS NULL AND lower(l.email) = lower(i.email) \
                       ORDER BY l.is_active DESC, l.id LIMIT 1) \
           AND NOT EXISTS (SELECT 1 FROM users x WHERE x.auth_user_id = i.auth_user_id)",
    )
    .bind(&ids)
    .bind(&emails)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Whether each user's row was active before this change, and which changes would take
/// an email that another active row holds.
async fn inspect(
    tx: &mut PgConnection,
    rows: &[(Uuid, &Row)],
) -> Result<(HashMap<Uuid, bool>, HashSet<Uuid>), sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let emails: Vec<&str> = rows.iter().map(|r| r.1.email.as_str()).collect();
    let active: Vec<bool> = rows.iter().map(|r| r.1.is_active).collect();
    let found = sqlx::query(
        "SELECT i.auth_user_id, u.is_active, \
           i.active AND EXISTS (SELECT 1 FROM users c WHERE lower(c.email) = lower(i.email) \
             AND c.is_active AND c.auth_user_id IS DISTINCT FROM i.auth_user_id) \
         FROM UNNEST($1::uuid[], $2::text[], $3::bool[]) AS i(auth_user_id, email, active) \
         LEFT JOIN users u ON u.auth_user_id = i.auth_user_id",
    )
    .bind(&ids)
    .bind(&emails)
    .bind(&active)
    .fetch_all(&mut *tx)
    .await?;
    let mut was_active = HashMap::new();
    let mut conflicts = HashSet::new();
    for r in found {
        let id: Uuid = r.get(0);
        if let Some(active) = r.get::<Option<bool>, _>(1) {
            was_active.insert(id, active);
        }
        if r.get::<Option<bool>, _>(2) == Some(true) {
            conflicts.insert(id);
        }
    }
    Ok((was_active, conflicts))
}

async fn upsert(tx: &mut PgConnection, rows: &[(Uuid, &Row)]) -> Result<(), sqlx::Error> {
    let col = |f: fn(&Row) -> Option<&str>| -> Vec<Option<&str>> {
        rows.iter().map(|r| f(r.1)).collect()
    };
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let services: Vec<String> = rows
        .iter()
        .map(|r| serde_json::to_string(&r.1.allowed_services).expect("strings serialise"))
        .collect();
    let active: Vec<bool> = rows.iter().map(|r| r.1.is_active).collect();
    let ts: Vec<OffsetDateTime> = rows.iter().map(|r| r.1.source_updated_at).collect();
    sqlx::query(
        "INSERT INTO users AS u (auth_user_id, email, first_name, last_name, password_hash, role, \
           allowed_services, is_active, deactivation_reason, source_updated_at) \
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
           source_updated_at = EXCLUDED.source_updated_at, updated_at = now()",
    )
    .bind(&ids)
    .bind(col(|r| Some(r.email.as_str())))
    .bind(col(|r| r.first_name.as_deref()))
    .bind(col(|r| r.last_name.as_deref()))
    .bind(col(|r| r.password_hash.as_deref()))
    .bind(col(|r| r.role.as_deref()))
    .bind(&services)
    .bind(&active)
    .bind(col(|r| r.deactivation_reason.map(|d| d.as_str())))
    .bind(&ts)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
