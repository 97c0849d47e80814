//! Applying a batch so that a failed event takes no other event with it: the table ends
//! as applying the batch's events in timestamp order, the failed ones skipped. Shared by
//! the worker and `import`.

use crate::decide::{Intent, Outcome, Planned, UserBatch};
use crate::store::{Audit, Commit, EventMeta, EventResult, Store};
use std::collections::{BTreeMap, HashSet};
use uuid::Uuid;

/// The audit trail's inputs, when it is on.
#[derive(Clone, Copy)]
pub struct Trail<'a> {
    pub service: &'a str,
    /// Per planned index.
    pub meta: &'a [EventMeta],
}

/// Applies `users` (from `decide::reduce`, minus any the brake holds) and returns a result
/// for every index they name and for every index in `losers`.
///
/// A user's batch keeps only its newest events, the older ones being superseded. When the
/// newest fails (its email is taken, a trigger refuses it), the older ones were not
/// superseded after all: that user's events are applied again one at a time, oldest first,
/// so an earlier deletion or password change still lands. Failed users go round by round
/// (the k-th event of every such user in one transaction), not one transaction per event.
pub async fn apply_isolated(
    store: &Store,
    planned: &[Planned],
    users: &[UserBatch],
    losers: &[usize],
    commit: Commit,
    trail: Option<Trail<'_>>,
) -> Result<Vec<(usize, EventResult)>, sqlx::Error> {
    let audit = trail.map(|t| Audit {
        service: t.service,
        meta: t.meta,
        losers,
    });
    let first = store
        .apply_as(planned, users, commit, audit.as_ref())
        .await?;
    let failed: HashSet<Uuid> = first
        .iter()
        .filter(|(_, r)| !matches!(r, EventResult::Done(_)))
        .map(|(i, _)| planned[*i].user_id)
        .collect();
    let stale = EventResult::Done(Outcome::Stale);
    let mut results: Vec<(usize, EventResult)> = first
        .into_iter()
        .filter(|(i, _)| !failed.contains(&planned[*i].user_id))
        .chain(losers.iter().map(|&l| (l, stale.clone())))
        .filter(|(i, _)| !failed.contains(&planned[*i].user_id))
        .collect();
    if failed.is_empty() {
        return Ok(results);
    }
    let audit = trail.map(|t| Audit {
        service: t.service,
        meta: t.meta,
        losers: &[],
    });
    let queues = one_by_one(planned, users, losers, &failed);
    for round in 0.. {
        let singles: Vec<UserBatch> = queues
            .values()
            .filter_map(|q| q.get(round))
            .map(|&i| single(planned, i))
            .collect();
        if singles.is_empty() {
            break;
        }
        let outcomes = store
            .apply_as(planned, &singles, commit, audit.as_ref())
            .await?;
        results.extend(outcomes);
    }
    Ok(results)
}

/// Each failed user's events, oldest first, keyed (and so locked) in user order.
fn one_by_one(
    planned: &[Planned],
    users: &[UserBatch],
    losers: &[usize],
    failed: &HashSet<Uuid>,
) -> BTreeMap<Uuid, Vec<usize>> {
    let mut queues: BTreeMap<Uuid, Vec<usize>> = BTreeMap::new();
    let named = users
        .iter()
        .flat_map(|u| std::iter::once(u.newest).chain(u.upsert.filter(|up| *up != u.newest)));
    for i in named.chain(losers.iter().copied()) {
        if failed.contains(&planned[i].user_id) {
            queues.entry(planned[i].user_id).or_default().push(i);
        }
    }
    for q in queues.values_mut() {
        q.sort_by_key(|&i| planned[i].key);
    }
    queues
}

fn single(planned: &[Planned], i: usize) -> UserBatch {
    UserBatch {
        newest: i,
        upsert: matches!(planned[i].intent, Intent::Upsert(_)).then_some(i),
    }
}
