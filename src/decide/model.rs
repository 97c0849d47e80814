//! The reference model of the convergence rule: what applying events one at a time in
//! timestamp order does to a user's state. Tests, the benchmark and the fuzz target compare
//! the real table with [`converge`]; the worker's path is `plan`, `reduce` and the store's
//! SQL, which must agree with this model. Editing this file changes no behaviour of the
//! service.

use super::{
    EventKey, Intent, Outcome, Planned, Reason, UserRow, deactivate_outcome, upsert_outcome,
};
use uuid::Uuid;

/// The status the newest event gave a user: what a row has, or would be created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub key: EventKey,
    pub active: bool,
    pub reason: Option<Reason>,
}

/// What the service knows of one user. Two watermarks make the state order-independent:
/// the row's status follows the newest event of any kind, its fields follow the newest
/// event that carried them for this service. Both are maxima, so any arrival order and
/// any duplicates give the state that timestamp order gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub status: Option<Status>,
    pub data_watermark: Option<EventKey>,
    pub row: Option<UserRow>,
}

impl Planned {
    fn status(&self) -> Status {
        match &self.intent {
            Intent::Upsert(row) => Status {
                key: self.key,
                active: row.is_active,
                reason: row.deactivation_reason,
            },
            Intent::Deactivate(reason) => Status {
                key: self.key,
                active: false,
                reason: Some(*reason),
            },
        }
    }
}

/// One event applied to one user's state: the reference semantics of the store's SQL.
///
/// An event older than the newest status may still carry fields newer than the row's
/// (an update that arrives after a later deletion): they are filled in, the status stays.
/// That keeps "a late create cannot resurrect a deleted user" and still ends in the table
/// that timestamp order gives.
pub fn step(p: &Planned, current: &State) -> (Outcome, State) {
    let status_newer = current.status.is_none_or(|s| p.key > s.key);
    let data = match &p.intent {
        Intent::Upsert(row) if current.data_watermark.is_none_or(|d| p.key > d) => Some(row),
        _ => None,
    };
    if !status_newer && data.is_none() {
        return (Outcome::Stale, current.clone());
    }
    let status = if status_newer {
        p.status()
    } else {
        current.status.expect("older than it")
    };
    let with_status = |row: &UserRow| UserRow {
        is_active: status.active,
        deactivation_reason: status.reason,
        source_updated_at: status.key.timestamp,
        ..row.clone()
    };
    let row = match (data, &current.row) {
        (Some(new), _) => Some(with_status(new)),
        (None, old) => old.as_ref().map(with_status),
    };
    let old_active = current.row.as_ref().map(|r| r.is_active);
    let outcome = match (&p.intent, status_newer) {
        (_, false) => Outcome::Backfilled,
        (Intent::Upsert(new), true) => match upsert_outcome(old_active, new.is_active) {
            Outcome::Applied if same_fields(current.row.as_ref(), row.as_ref()) => {
                Outcome::Unchanged
            }
            outcome => outcome,
        },
        (Intent::Deactivate(reason), true) => match current.row.as_ref() {
            Some(old) if !old.is_active && old.deactivation_reason == Some(*reason) => {
                Outcome::Unchanged
            }
            _ => deactivate_outcome(old_active.is_some(), *reason),
        },
    };
    let state = State {
        status: Some(status),
        data_watermark: if data.is_some() {
            Some(p.key)
        } else {
            current.data_watermark
        },
        row,
    };
    (outcome, state)
}

/// Every field the service writes (the trail's `audit::FIELDS`) is the same; the time the
/// status stands on is not a field.
fn same_fields(old: Option<&UserRow>, new: Option<&UserRow>) -> bool {
    let (Some(old), Some(new)) = (old, new) else {
        return false;
    };
    let new = UserRow {
        source_updated_at: old.source_updated_at,
        ..new.clone()
    };
    new == *old
}

/// The table that applying `events` in key order gives: the expected state that tests and
/// the benchmark compare the real table with.
pub fn converge<'a>(
    events: impl IntoIterator<Item = &'a Planned>,
) -> std::collections::BTreeMap<Uuid, State> {
    let mut sorted: Vec<&Planned> = events.into_iter().collect();
    sorted.sort_by_key(|p| (p.user_id, p.key));
    let mut states = std::collections::BTreeMap::new();
    for p in sorted {
        let state: &mut State = states.entry(p.user_id).or_default();
        *state = step(p, state).1;
    }
    states
}
