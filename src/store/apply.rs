//! Applying a reduced batch: set-based SQL in one transaction, guarded by the watermark.
//!
//! The guard is the first statement of the transaction: a conditional upsert of the
//! per-user watermark that only moves forward. It row-locks every user it touches until
//! commit, so a replica working on the same user waits and then finds itself stale; no
//! decision is made on data read outside the transaction.

use super::Store;
use super::attempt::{Attempt, AttemptCtx};
use super::audit::Audit;
use super::classify::{Fault, classify};
use super::result::{Commit, EventResult};
use crate::decide::{Planned, UserBatch};
use std::collections::HashMap;
use uuid::Uuid;

/// Deadlocks and serialization failures retried at once within one `apply`; past this the
/// error is returned and the worker pauses, since something keeps taking our rows.
const MAX_CONTENTION_RETRIES: u32 = 20;

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
        self.apply_checking(planned, users, commit, audit, false)
            .await
    }

    /// `apply_as`, checking for email conflicts before every write when `check` (the
    /// isolation rounds of a user whose batch failed, most often on a conflict).
    pub(crate) async fn apply_checking(
        &self,
        planned: &[Planned],
        users: &[UserBatch],
        commit: Commit,
        audit: Option<&Audit<'_>>,
        check: bool,
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
            results.extend(u.events().map(|i| (i, r.clone())));
        };
        let mut work: Vec<Vec<usize>> = vec![(0..users.len()).collect()];
        let mut contended = 0;
        // The own table's unique index (`users_active_email_key`) refuses a second active
        // row for an email by itself, so the conflict check runs only once an attempt of
        // this apply has met that refusal: one statement (a round trip and its share of the
        // database's work per event) less in the common case, one rolled-back attempt more
        // in the rare one (BENCHMARKS.md, Drain, "Where the time goes with two batches in
        // flight"). A backend's table may have no such index: always checked.
        let mut check_conflicts = check || self.target_table_sql().is_some();
        while let Some(set) = work.pop() {
            if set.is_empty() {
                continue;
            }
            match self
                .attempt(planned, users, &set, &ctx, check_conflicts)
                .await
            {
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
                    Fault::Event(EventResult::EmailConflict) if !check_conflicts => {
                        check_conflicts = true;
                        work.push(set);
                    }
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
}
