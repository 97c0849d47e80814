//! The convergence rule (docs/contract.md#convergence) as pure functions.
//!
//! An event is reduced to a [`Planned`] change ordered by its [`EventKey`]; a change applies
//! only when its key is greater than the user's watermark. The store enforces the same
//! comparison inside its SQL, so replicas and redeliveries cannot undo each other;
//! [`decide`] is the reference for what one applied event does to one user.

use crate::event::{Event, EventKind};
use crate::membership::Membership;
use crate::redact::PasswordHash;
use time::OffsetDateTime;
use uuid::Uuid;

/// Total order over events of one user: timestamp, then kind (deleted > updated > created),
/// then a digest of the content so that two different events with the same timestamp and
/// kind still converge to one winner whatever order they arrive in. Identical events have
/// equal keys and the second is a no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey {
    pub timestamp: OffsetDateTime,
    pub rank: i16,
    pub digest: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Deleted,
    AccessRevoked,
    InactiveUpstream,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Deleted => "deleted",
            Reason::AccessRevoked => "access_revoked",
            Reason::InactiveUpstream => "inactive_upstream",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Reason::Deleted,
            Reason::AccessRevoked,
            Reason::InactiveUpstream,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The columns this service owns in a user's row. `Debug` masks the hash (a `PasswordHash`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub password_hash: Option<PasswordHash>,
    pub role: Option<String>,
    pub allowed_services: Vec<String>,
    pub is_active: bool,
    pub deactivation_reason: Option<Reason>,
    pub source_updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// The user belongs here: insert or overwrite every field.
    Upsert(Row),
    /// Deactivate an existing row; never create one.
    Deactivate(Reason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub user_id: Uuid,
    pub key: EventKey,
    pub intent: Intent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Applied,
    Reactivated,
    Deactivated,
    NotForService,
    /// A deletion of a user this service never had: only the watermark is recorded.
    Absent,
    /// Older than the user's status but newer than the row's fields: fields filled in.
    Backfilled,
    Stale,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Reactivated => "reactivated",
            Outcome::Deactivated => "deactivated",
            Outcome::NotForService => "not-for-this-service",
            Outcome::Absent => "absent",
            Outcome::Backfilled => "backfilled",
            Outcome::Stale => "stale",
        }
    }
}

/// What became of a delivery: the one label that logs, metrics and the audit trail share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Committed (or found to change nothing) with this outcome.
    Applied(Outcome),
    /// An event type this service does not handle.
    Ignored,
    /// Parked in the hold queue by the mass-deactivation brake.
    Held,
    /// Sent to a retry tier.
    Retried,
    DeadLettered,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Applied(outcome) => outcome.as_str(),
            Decision::Ignored => "ignored",
            Decision::Held => "held",
            Decision::Retried => "retried",
            Decision::DeadLettered => "dead-lettered",
        }
    }
}

pub fn plan(event: &Event, membership: &Membership) -> Planned {
    let u = &event.user;
    let intent = match event.kind {
        EventKind::Deleted => Intent::Deactivate(Reason::Deleted),
        _ if !membership.belongs(u.role.as_deref(), &u.allowed_services) => {
            Intent::Deactivate(Reason::AccessRevoked)
        }
        _ => Intent::Upsert(Row {
            email: u.email.clone().unwrap_or_default(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            password_hash: u.password_hash.clone(),
            role: u.role.clone(),
            allowed_services: u.allowed_services.clone(),
            is_active: u.is_active,
            deactivation_reason: (!u.is_active).then_some(Reason::InactiveUpstream),
            source_updated_at: event.timestamp,
        }),
    };
    Planned {
        user_id: event.user_id,
        key: EventKey {
            timestamp: event.timestamp,
            rank: event.kind as i16,
            digest: digest(event),
        },
        intent,
    }
}

/// FNV-1a over the event's content (not its id): deterministic across processes and
/// versions, which a replica-safe tie-break needs; `DefaultHasher` promises neither.
fn digest(event: &Event) -> i64 {
    let u = &event.user;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(event.kind.as_str().as_bytes());
    for field in [
        u.email.as_deref(),
        u.first_name.as_deref(),
        u.last_name.as_deref(),
        u.password_hash.as_ref().map(PasswordHash::as_str),
        u.role.as_deref(),
    ] {
        feed(field.unwrap_or("\u{0}").as_bytes());
    }
    feed(&[u8::from(u.is_active)]);
    for s in &u.allowed_services {
        feed(s.as_bytes());
    }
    h as i64
}

/// A user's share of a batch: the newest event (it may set the status) and the newest
/// event carrying fields for this service (it may set the fields), often the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserBatch {
    pub newest: usize,
    pub upsert: Option<usize>,
}

/// Reduces a batch to one [`UserBatch`] per user, sorted by user id (the order the store
/// locks rows in, so concurrent replicas cannot deadlock), and the indices that can
/// change nothing because a newer event in the same batch supersedes them.
pub fn reduce(planned: &[Planned]) -> (Vec<UserBatch>, Vec<usize>) {
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by(|&a, &b| {
        let (pa, pb) = (&planned[a], &planned[b]);
        pa.user_id.cmp(&pb.user_id).then(pb.key.cmp(&pa.key))
    });
    let mut users: Vec<UserBatch> = Vec::new();
    let mut losers = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        let is_upsert = matches!(planned[i].intent, Intent::Upsert(_));
        let first_of_user = pos == 0 || planned[order[pos - 1]].user_id != planned[i].user_id;
        match users.last_mut() {
            Some(user) if !first_of_user && is_upsert && user.upsert.is_none() => {
                user.upsert = Some(i);
            }
            _ if !first_of_user => losers.push(i),
            _ => users.push(UserBatch {
                newest: i,
                upsert: is_upsert.then_some(i),
            }),
        }
    }
    (users, losers)
}

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
    pub row: Option<Row>,
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
pub fn decide(p: &Planned, current: &State) -> (Outcome, State) {
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
    let with_status = |row: &Row| Row {
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
        (Intent::Upsert(new), true) => upsert_outcome(old_active, new.is_active),
        (Intent::Deactivate(reason), true) => deactivate_outcome(old_active.is_some(), *reason),
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

/// What an applied upsert did, given whether the row existed and was active before.
pub fn upsert_outcome(was_active: Option<bool>, now_active: bool) -> Outcome {
    match (was_active, now_active) {
        (Some(false), true) => Outcome::Reactivated,
        (Some(true), false) => Outcome::Deactivated,
        _ => Outcome::Applied,
    }
}

/// What an applied deactivation did, given whether the user had a row.
pub fn deactivate_outcome(row_existed: bool, reason: Reason) -> Outcome {
    match (row_existed, reason) {
        (true, _) => Outcome::Deactivated,
        (false, Reason::Deleted) => Outcome::Absent,
        (false, _) => Outcome::NotForService,
    }
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
        *state = decide(p, state).1;
    }
    states
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
