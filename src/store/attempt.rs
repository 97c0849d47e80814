//! One attempt at a set of users of a reduced batch, in one transaction: the watermark
//! guard first, then the rows (adopted, checked for email conflicts, upserted), then the
//! status-only changes, then the audit trail; committed or rolled back as a whole.

use super::Store;
use super::audit::{self, Audit};
use super::freed::{Freed, free_emails};
use super::guard::{Advanced, advance_watermarks};
use super::result::Commit;
use super::statements::{adopt, email_conflicts, update_status, upsert};
use super::target_table::TargetTableSql;
use super::trail::AttemptView;
use crate::decide::{
    Intent, Outcome, Planned, UserBatch, UserRow, deactivate_outcome, upsert_outcome,
};
use sqlx::PgConnection;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// What every attempt of one `apply` shares.
pub(super) struct AttemptCtx<'a> {
    pub commit: Commit,
    pub audit: Option<&'a Audit<'a>>,
    /// Superseded events by user, written as stale with their user's attempt.
    pub losers: &'a HashMap<Uuid, Vec<usize>>,
}

pub(super) enum Attempt {
    Committed(Vec<(usize, Outcome)>),
    /// Users (indices into the batch's `UserBatch` list) whose email another active row holds.
    Conflicts(Vec<usize>),
}

/// What the writes of an attempt did, for outcomes and the trail.
#[derive(Default)]
struct Written {
    existed: HashSet<Uuid>,
    inserted: HashSet<Uuid>,
    /// Rows the backend had before the sync, linked to their auth user now: a change even
    /// when every field already had the event's value.
    adopted: HashSet<Uuid>,
    /// Per data user, the fields the write changed (`audit::FIELDS` bits); a status-only
    /// user whose row's status changed has `audit::STATUS_FIELDS`.
    changes: HashMap<Uuid, i16>,
    /// Deactivated rows whose email went to its tombstone.
    freed: Vec<Freed>,
}

/// The users of a set whose watermark moved: with fields to write, or the status only.
struct Moved {
    data: Vec<usize>,
    status_only: Vec<usize>,
}

impl Store {
    pub(super) async fn attempt(
        &self,
        planned: &[Planned],
        users: &[UserBatch],
        set: &[usize],
        ctx: &AttemptCtx<'_>,
        check_conflicts: bool,
    ) -> Result<Attempt, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if self.target_table_sql().is_some_and(|m| m.hash_joins) {
            sqlx::query("SET LOCAL enable_hashjoin = on")
                .execute(&mut *tx)
                .await?;
        }
        let guarded =
            advance_watermarks(&mut tx, planned, users, set, self.target_table_sql()).await?;
        let advanced = guarded.advanced;
        let mut outcomes = Vec::new();
        let moved = sort_moved(planned, users, set, &advanced, &mut outcomes);
        let mut written = Written::default();
        let rows = data_rows(planned, users, &moved.data, &advanced);
        if !rows.is_empty() {
            if guarded.unlinked {
                written.adopted = adopt(&mut tx, &rows, self.target_table_sql()).await?;
            }
            let conflicts = match check_conflicts {
                true => email_conflicts(&mut tx, &rows, self.target_table_sql()).await?,
                false => HashSet::new(),
            };
            if !conflicts.is_empty() {
                tx.rollback().await?;
                let of =
                    |(u, (id, _)): (&usize, &(Uuid, UserRow))| conflicts.contains(id).then_some(*u);
                return Ok(Attempt::Conflicts(
                    moved.data.iter().zip(&rows).filter_map(of).collect(),
                ));
            }
            write_rows(&mut tx, &rows, self.target_table_sql(), &mut written).await?;
        }
        if !moved.status_only.is_empty() {
            let ids: Vec<Uuid> = moved
                .status_only
                .iter()
                .map(|&u| planned[users[u].newest].user_id)
                .collect();
            let status = update_status(&mut tx, &ids, &advanced, self.target_table_sql()).await?;
            for (id, changed) in status {
                written.existed.insert(id);
                if changed {
                    written.changes.insert(id, audit::STATUS_FIELDS);
                }
            }
        }
        for &u in moved.data.iter().chain(&moved.status_only) {
            push_outcomes(planned, &users[u], &advanced, &written, &mut outcomes);
        }
        if let Some(audit) = ctx.audit {
            let view = AttemptView {
                planned,
                users,
                set,
                outcomes: &outcomes,
                advanced: &advanced,
                existed: &written.existed,
                inserted: &written.inserted,
                changes: &written.changes,
                freed: &written.freed,
            };
            let entries = view.entries(&mut tx, audit, ctx.losers).await?;
            audit::write(&mut tx, planned, audit, &entries, &self.trail_via).await?;
        }
        match ctx.commit {
            Commit::Yes => tx.commit().await?,
            Commit::RollBack => tx.rollback().await?,
        }
        Ok(Attempt::Committed(outcomes))
    }
}

/// Splits the set by what the guard moved; users it did not move are stale, all their
/// events at once.
fn sort_moved(
    planned: &[Planned],
    users: &[UserBatch],
    set: &[usize],
    advanced: &HashMap<Uuid, Advanced>,
    outcomes: &mut Vec<(usize, Outcome)>,
) -> Moved {
    let mut moved = Moved {
        data: Vec::new(),
        status_only: Vec::new(),
    };
    for &u in set {
        let user = &users[u];
        match advanced.get(&planned[user.newest].user_id) {
            None => outcomes.extend(user.events().map(|i| (i, Outcome::Stale))),
            Some(a) if a.data => moved.data.push(u),
            Some(_) => moved.status_only.push(u),
        }
    }
    moved
}

/// The row each data user gets: the upsert's fields under the status the guard settled.
fn data_rows(
    planned: &[Planned],
    users: &[UserBatch],
    data: &[usize],
    advanced: &HashMap<Uuid, Advanced>,
) -> Vec<(Uuid, UserRow)> {
    data.iter()
        .map(|&u| {
            let up = users[u].upsert.expect("data advanced only with an upsert");
            let Intent::Upsert(row) = &planned[up].intent else {
                unreachable!("reduce keeps upserts in `upsert`")
            };
            let a = &advanced[&planned[up].user_id];
            let row = UserRow {
                is_active: a.active,
                deactivation_reason: a.reason,
                source_updated_at: a.status_ts,
                ..row.clone()
            };
            (planned[up].user_id, row)
        })
        .collect()
}

async fn write_rows(
    tx: &mut PgConnection,
    rows: &[(Uuid, UserRow)],
    target_table: Option<&TargetTableSql>,
    written: &mut Written,
) -> Result<(), sqlx::Error> {
    written.freed = free_emails(tx, rows, target_table).await?;
    let upserted = upsert(tx, rows, target_table).await?;
    for (id, row) in rows {
        let (new, mask) = upserted.get(id).copied().unwrap_or((false, 0));
        if new {
            written.inserted.insert(*id);
        }
        let changed = if new { audit::new_row_mask(row) } else { mask };
        written.changes.insert(*id, changed);
        written.existed.insert(*id);
    }
    Ok(())
}

/// The outcomes of a moved user's events: the newest by what its status did (or
/// backfilled, when only the fields moved), an older upsert backfilled or stale.
fn push_outcomes(
    planned: &[Planned],
    user: &UserBatch,
    advanced: &HashMap<Uuid, Advanced>,
    written: &Written,
    outcomes: &mut Vec<(usize, Outcome)>,
) {
    let newest = &planned[user.newest];
    let id = newest.user_id;
    let a = &advanced[&id];
    let status_outcome = match &newest.intent {
        Intent::Upsert(_) if written.inserted.contains(&id) => Outcome::Applied,
        Intent::Upsert(row) => match upsert_outcome(a.prev_active, row.is_active) {
            Outcome::Applied
                if written.changes.get(&id) == Some(&0) && !written.adopted.contains(&id) =>
            {
                Outcome::Unchanged
            }
            outcome => outcome,
        },
        Intent::Deactivate(reason)
            if a.prev_active == Some(false)
                && a.prev_reason == Some(*reason)
                && written
                    .changes
                    .get(&id)
                    .is_none_or(|m| m & audit::STATUS_FIELDS == 0) =>
        {
            // The row's status was this already: the watermark said so, and the write
            // changed no status (the backend did not reactivate the row meanwhile).
            match deactivate_outcome(written.existed.contains(&id), *reason) {
                Outcome::Deactivated => Outcome::Unchanged,
                outcome => outcome,
            }
        }
        Intent::Deactivate(reason) => deactivate_outcome(written.existed.contains(&id), *reason),
    };
    let newest_outcome = if a.status {
        status_outcome
    } else {
        Outcome::Backfilled
    };
    outcomes.push((user.newest, newest_outcome));
    if let Some(up) = user.upsert.filter(|up| *up != user.newest) {
        let older = if a.data {
            Outcome::Backfilled
        } else {
            Outcome::Stale
        };
        outcomes.push((up, older));
    }
}
