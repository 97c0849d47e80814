//! Applying a batch so that a failed event takes no other event with it: the table ends
//! as applying the batch's events in timestamp order, the failed ones skipped. Shared by
//! the worker and `import`.

use crate::decide::{self, Outcome, Planned, UserBatch};
use crate::store::{Audit, Commit, EventMeta, EventResult, Store};
use std::collections::{BTreeMap, VecDeque};
use uuid::Uuid;

/// The audit trail's inputs, when it is on.
#[derive(Clone, Copy)]
pub struct Trail<'a> {
    pub service: &'a str,
    /// Per planned index.
    pub meta: &'a [EventMeta],
    /// Whether an event that changed nothing (stale, unchanged) gets a line: yes for the
    /// queue's events, whose senders ask why their change did not show; no for an import's
    /// records, where a full export of users already as they are would write a line per
    /// user and change nothing.
    pub no_ops: bool,
}

/// A run of one user's events, consecutive in timestamp order.
struct Span {
    events: Vec<usize>,
    /// Known to fail when applied as one reduced batch.
    fails: bool,
}

/// Applies `users` (from `decide::reduce`, minus any the brake holds) and returns a result
/// for every index they name and for every index in `losers`.
///
/// A user's batch keeps only its newest events, the older ones being superseded. When the
/// newest fails (its email is taken, a trigger refuses it), the older ones were not
/// superseded after all. That user's events are then applied as consecutive spans in
/// timestamp order, each reduced like a batch: a span that fails is split (first without
/// its newest event, the likely culprit, then in halves) until the failing event stands
/// alone and is skipped. Applying spans oldest first is applying the events in timestamp
/// order, and the cost is a few transactions per failure, not one per event. The spans of
/// all failing users go round by round, one transaction per round.
pub async fn isolate_failures(
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
        no_ops: t.no_ops,
    });
    let first = store
        .apply_as(planned, users, commit, audit.as_ref())
        .await?;
    let mut spans = failed_spans(planned, users, losers, &first);
    let stale = EventResult::Done(Outcome::Stale);
    let mut results: Vec<(usize, EventResult)> = first
        .into_iter()
        .chain(losers.iter().map(|&l| (l, stale.clone())))
        .filter(|(i, r)| match spans.get(&planned[*i].user_id) {
            None => true,
            // A user with one event keeps its failure; there is nothing to isolate.
            Some(q) => q[0].events.len() == 1 && !matches!(r, EventResult::Done(_)),
        })
        .collect();
    spans.retain(|_, q| q[0].events.len() > 1);
    while !spans.is_empty() {
        results.extend(round(store, planned, &mut spans, commit, trail).await?);
    }
    Ok(results)
}

/// One round: the next span of every failing user, applied in one transaction. A span
/// that fails goes back, known to fail, to be split; one that commits is done, its
/// superseded events stale.
async fn round(
    store: &Store,
    planned: &[Planned],
    spans: &mut BTreeMap<Uuid, VecDeque<Span>>,
    commit: Commit,
    trail: Option<Trail<'_>>,
) -> Result<Vec<(usize, EventResult)>, sqlx::Error> {
    let round: Vec<(Uuid, Vec<usize>)> = spans
        .iter_mut()
        .map(|(user, q)| (*user, next_span(q)))
        .collect();
    let (batch, round_losers) = reduce_spans(planned, &round);
    let audit = trail.map(|t| Audit {
        service: t.service,
        meta: t.meta,
        losers: &round_losers,
        no_ops: t.no_ops,
    });
    let outcomes = store
        .apply_checking(planned, &batch, commit, audit.as_ref(), true)
        .await?;
    let mut results = Vec::new();
    for (user, events) in round {
        let mine: Vec<(usize, EventResult)> = outcomes
            .iter()
            .filter(|(i, _)| planned[*i].user_id == user)
            .cloned()
            .collect();
        let q = spans.get_mut(&user).expect("a user of the round");
        let failed = mine.iter().any(|(_, r)| !matches!(r, EventResult::Done(_)));
        if failed && events.len() > 1 {
            q.push_front(Span {
                events,
                fails: true,
            });
            continue;
        }
        let named: Vec<usize> = mine.iter().map(|(i, _)| *i).collect();
        results.extend(mine);
        let superseded = events.into_iter().filter(|i| !named.contains(i));
        results.extend(superseded.map(|i| (i, EventResult::Done(Outcome::Stale))));
        if q.is_empty() {
            spans.remove(&user);
        }
    }
    Ok(results)
}

/// Every failed user's events of the batch, oldest first, as one span known to fail.
fn failed_spans(
    planned: &[Planned],
    users: &[UserBatch],
    losers: &[usize],
    first: &[(usize, EventResult)],
) -> BTreeMap<Uuid, VecDeque<Span>> {
    let mut spans: BTreeMap<Uuid, VecDeque<Span>> = first
        .iter()
        .filter(|(_, r)| !matches!(r, EventResult::Done(_)))
        .map(|(i, _)| (planned[*i].user_id, VecDeque::new()))
        .collect();
    let events = decide::events_by_user(planned, users, losers);
    let failed = events
        .into_iter()
        .filter(|(user, _)| spans.contains_key(user));
    for (user, mut events) in failed.collect::<Vec<_>>() {
        events.sort_by_key(|&i| planned[i].key);
        spans
            .get_mut(&user)
            .expect("a failed user")
            .push_back(Span {
                events,
                fails: true,
            });
    }
    spans
}

/// The next span to try: a span known to fail is split first, without its newest event
/// the first time (the event that failed in the batch is most often the newest), in
/// halves after that.
fn next_span(q: &mut VecDeque<Span>) -> Vec<usize> {
    loop {
        let span = q.pop_front().expect("a user with spans left");
        if !span.fails {
            return span.events;
        }
        let mut older = span.events;
        let first_split = q.is_empty();
        let cut = if first_split {
            older.len() - 1
        } else {
            older.len() / 2
        };
        let newer = older.split_off(cut);
        q.push_front(Span {
            events: newer,
            fails: false,
        });
        q.push_front(Span {
            events: older,
            fails: false,
        });
    }
}

/// One round's spans reduced as one batch: the user batches (in user order, the order the
/// store locks rows in) and the superseded events, as indices into `planned`.
fn reduce_spans(planned: &[Planned], round: &[(Uuid, Vec<usize>)]) -> (Vec<UserBatch>, Vec<usize>) {
    let mut batch = Vec::new();
    let mut losers = Vec::new();
    for (_, events) in round {
        let span: Vec<Planned> = events.iter().map(|&i| planned[i].clone()).collect();
        let (users, span_losers) = decide::reduce(&span);
        batch.extend(users.into_iter().map(|u| UserBatch {
            newest: events[u.newest],
            upsert: u.upsert.map(|up| events[up]),
        }));
        losers.extend(span_losers.into_iter().map(|l| events[l]));
    }
    (batch, losers)
}
