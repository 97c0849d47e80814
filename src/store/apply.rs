//! Applying a reduced batch: set-based SQL in one transaction, guarded by the watermark.
//!
//! The guard is the first statement of the transaction: a conditional upsert of the
//! per-user watermark that only moves forward. It row-locks every user it touches until
//! commit, so a replica working on the same user waits and then finds itself stale; no
//! decision is made on data read outside the transaction.

use super::Store;
use super::audit::{self, Audit};
use super::classify::{Fault, classify};
use super::statements::{adopt, advance_watermarks, email_conflicts, update_status, upsert};
use super::trail::AttemptView;
use crate::decide::{Intent, Outcome, Planned, Row, UserBatch, deactivate_outcome, upsert_outcome};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Deadlocks and serialization failures retried at once within one `apply`; past this the
/// error is returned and the worker pauses, since something keeps taking our rows.
const MAX_CONTENTION_RETRIES: u32 = 20;

/// What became of one planned change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventResult {
    Done(Outcome),
    /// Its email is held by another active user; a later event may free it.
    EmailConflict,
    /// The database refused this one change for good (a constraint, a value out of range).
    Rejected(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Yes,
    RollBack,
}

/// What every attempt of one `apply` shares.
struct AttemptCtx<'a> {
    commit: Commit,
    audit: Option<&'a Audit<'a>>,
    /// Superseded events by user, written as stale with their user's attempt.
    losers: &'a HashMap<Uuid, Vec<usize>>,
}

enum Attempt {
    Committed(Vec<(usize, Outcome)>),
    /// Users (indices into the batch's `UserBatch` list) whose email another active row holds.
    Conflicts(Vec<usize>),
}

impl Store {
    /// Applies a reduced batch (see `decide::reduce`); returns a result for every event
    /// index the `users` name. A failure that belongs to one user splits the batch until
    /// that user stands alone, so the rest commit; contention is tried again at once. An
    /// outage (see `classify`) is returned as is; what committed before it is safe to
    /// apply again.
    pub async fn apply(
        &self,
        planned: &[Planned],
        users: &[UserBatch],
    ) -> Result<Vec<(usize, EventResult)>, sqlx::Error> {
        self.apply_as(planned, users, Commit::Yes, None).await
    }

    /// `apply`, or with `Commit::RollBack` a rehearsal of it: the same statements, the
    /// same results, nothing kept (`import --dry-run`). With `audit`, every decision also
    /// leaves a trail row in the same transaction.
    pub async fn apply_as(
        &self,
        planned: &[Planned],
        users: &[UserBatch],
        commit: Commit,
        audit: Option<&Audit<'_>>,
    ) -> Result<Vec<(usize, EventResult)>, sqlx::Error> {
        let mut losers: HashMap<Uuid, Vec<usize>> = HashMap::new();
        for &l in audit.map_or(&[][..], |a| a.losers) {
            losers.entry(planned[l].user_id).or_default().push(l);
        }
        let ctx = AttemptCtx {
            commit,
            audit,
            losers: &losers,
        };
        let mut results = Vec::with_capacity(users.len());
        let fail_user = |results: &mut Vec<(usize, EventResult)>, u: &UserBatch, r: EventResult| {
            results.push((u.newest, r.clone()));
            if let Some(up) = u.upsert.filter(|up| *up != u.newest) {
                results.push((up, r));
            }
        };
        let mut work: Vec<Vec<usize>> = vec![(0..users.len()).collect()];
        let mut contended = 0;
        while let Some(set) = work.pop() {
            if set.is_empty() {
                continue;
            }
            match self.attempt(planned, users, &set, &ctx).await {
                Ok(Attempt::Committed(outcomes)) => {
                    results.extend(outcomes.into_iter().map(|(i, o)| (i, EventResult::Done(o))));
                }
                Ok(Attempt::Conflicts(conflicts)) => {
                    for &u in &conflicts {
                        fail_user(&mut results, &users[u], EventResult::EmailConflict);
                    }
                    work.push(set.into_iter().filter(|u| !conflicts.contains(u)).collect());
                }
                Err(e) => match classify(&e) {
                    Fault::Outage => return Err(e),
                    // Another writer held a row we needed; nothing of ours was wrong, and
                    // the rolled-back attempt left nothing behind: the same set again.
                    Fault::Contention if contended < MAX_CONTENTION_RETRIES => {
                        contended += 1;
                        tracing::debug!(error = %e, contended, "contention; trying again");
                        work.push(set);
                    }
                    Fault::Contention => return Err(e),
                    Fault::Event(result) if set.len() == 1 => {
                        fail_user(&mut results, &users[set[0]], result)
                    }
                    Fault::Event(_) => {
                        let mut left = set;
                        let right = left.split_off(left.len() / 2);
                        work.push(right);
                        work.push(left);
                    }
                },
            }
        }
        Ok(results)
    }

    async fn attempt(
        &self,
        planned: &[Planned],
        users: &[UserBatch],
        set: &[usize],
        ctx: &AttemptCtx<'_>,
    ) -> Result<Attempt, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let advanced = advance_watermarks(&mut tx, planned, users, set).await?;
        let mut outcomes = Vec::new();
        let mut data_users = Vec::new();
        let mut status_only = Vec::new();
        for &u in set {
            let user = &users[u];
            let id = planned[user.newest].user_id;
            match advanced.get(&id) {
                None => {
                    outcomes.push((user.newest, Outcome::Stale));
                    if let Some(up) = user.upsert.filter(|up| *up != user.newest) {
                        outcomes.push((up, Outcome::Stale));
                    }
                }
                Some(a) if a.data => data_users.push(u),
                Some(_) => status_only.push(u),
            }
        }

        let mut existed: HashSet<Uuid> = HashSet::new();
        let mut inserted: HashSet<Uuid> = HashSet::new();
        // Per data user: the fields the write changed (`audit::FIELDS` bits).
        let mut changes: HashMap<Uuid, i16> = HashMap::new();
        if !data_users.is_empty() {
            let rows: Vec<(Uuid, Row)> = data_users
                .iter()
                .map(|&u| {
                    let up = users[u].upsert.expect("data advanced only with an upsert");
                    let Intent::Upsert(row) = &planned[up].intent else {
                        unreachable!("reduce keeps upserts in `upsert`")
                    };
                    let a = &advanced[&planned[up].user_id];
                    let row = Row {
                        is_active: a.active,
                        deactivation_reason: a.reason,
                        source_updated_at: a.status_ts,
                        ..row.clone()
                    };
                    (planned[up].user_id, row)
                })
                .collect();
            adopt(&mut tx, &rows).await?;
            let conflicts = email_conflicts(&mut tx, &rows).await?;
            if !conflicts.is_empty() {
                tx.rollback().await?;
                let conflicts = data_users
                    .iter()
                    .zip(&rows)
                    .filter(|(_, (id, _))| conflicts.contains(id))
                    .map(|(u, _)| *u)
                    .collect();
                return Ok(Attempt::Conflicts(conflicts));
            }
            let upserted = upsert(&mut tx, &rows, ctx.audit.is_some()).await?;
            for (id, row) in &rows {
                let (new, mask) = upserted.get(id).copied().unwrap_or((false, 0));
                if new {
                    inserted.insert(*id);
                }
                changes.insert(*id, if new { audit::new_row_mask(row) } else { mask });
            }
            existed.extend(rows.iter().map(|r| r.0));
        }
        if !status_only.is_empty() {
            let ids: Vec<Uuid> = status_only
                .iter()
                .map(|&u| planned[users[u].newest].user_id)
                .collect();
            existed.extend(update_status(&mut tx, &ids, &advanced).await?);
        }
        for &u in data_users.iter().chain(&status_only) {
            let user = &users[u];
            let newest = &planned[user.newest];
            let a = &advanced[&newest.user_id];
            let status_outcome = match &newest.intent {
                Intent::Upsert(_) if inserted.contains(&newest.user_id) => Outcome::Applied,
                Intent::Upsert(row) => upsert_outcome(a.prev_active, row.is_active),
                Intent::Deactivate(reason) => {
                    deactivate_outcome(existed.contains(&newest.user_id), *reason)
                }
            };
            outcomes.push((
                user.newest,
                if a.status {
                    status_outcome
                } else {
                    Outcome::Backfilled
                },
            ));
            if let Some(up) = user.upsert.filter(|up| *up != user.newest) {
                outcomes.push((
                    up,
                    if a.data {
                        Outcome::Backfilled
                    } else {
                        Outcome::Stale
                    },
                ));
            }
        }
        if let Some(audit) = ctx.audit {
            let view = AttemptView {
                planned,
                users,
                set,
                outcomes: &outcomes,
                advanced: &advanced,
                existed: &existed,
                inserted: &inserted,
                changes: &changes,
            };
            let entries = view.entries(&mut tx, audit, ctx.losers).await?;
            audit::write(&mut tx, planned, audit, &entries).await?;
        }
        match ctx.commit {
            Commit::Yes => tx.commit().await?,
            Commit::RollBack => tx.rollback().await?,
        }
        Ok(Attempt::Committed(outcomes))
    }
}
