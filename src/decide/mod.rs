//! The convergence rule (docs/contract.md#convergence) as pure functions.
//!
//! An event is reduced to a [`Planned`] change ordered by its [`EventKey`]; a change applies
//! only when its key is greater than the user's watermark. The store enforces the same
//! comparison inside its SQL, so replicas and redeliveries cannot undo each other;
//! [`model`] is the reference for what one applied event does to one user: the tests and
//! the benchmark compare the table with it; the worker never runs it.

pub mod model;
mod outcome;
mod reduce;
pub mod trail_code;

pub use model::{State, Status, converge};
pub use outcome::{Decision, Outcome, deactivate_outcome, upsert_outcome};
pub use reduce::{UserBatch, events_by_user, reduce};

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
    /// A full export (`import --full`) taken after the user's last event no longer has them.
    AbsentFromExport,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Deleted => "deleted",
            Reason::AccessRevoked => "access_revoked",
            Reason::InactiveUpstream => "inactive_upstream",
            Reason::AbsentFromExport => "absent_from_export",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Reason::Deleted,
            Reason::AccessRevoked,
            Reason::InactiveUpstream,
            Reason::AbsentFromExport,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The columns this service owns in a user's row. `Debug` masks the hash (a `PasswordHash`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
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
    Upsert(UserRow),
    /// Deactivate an existing row; never create one.
    Deactivate(Reason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub user_id: Uuid,
    pub key: EventKey,
    pub intent: Intent,
}

pub fn plan(event: &Event, membership: &Membership) -> Planned {
    let u = &event.user;
    let intent = match event.kind {
        EventKind::Deleted => Intent::Deactivate(Reason::Deleted),
        _ if !membership.belongs(u.role.as_deref(), &u.allowed_services) => {
            Intent::Deactivate(Reason::AccessRevoked)
        }
        _ => Intent::Upsert(UserRow {
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

impl Planned {
    /// Whether it takes its user's status to inactive.
    pub fn deactivates(&self) -> bool {
        match &self.intent {
            Intent::Deactivate(_) => true,
            Intent::Upsert(row) => !row.is_active,
        }
    }
}

/// A full export as of `as_of` leaves this user out: a deactivation ranked as a deletion
/// at that time, so that any event after the export (and only such an event) stands.
pub fn absent_from_export(user_id: Uuid, as_of: OffsetDateTime) -> Planned {
    Planned {
        user_id,
        key: EventKey {
            timestamp: as_of,
            rank: EventKind::Deleted as i16,
            // Fixed: every reconcile at the same time agrees, and its rerun is stale.
            digest: 0,
        },
        intent: Intent::Deactivate(Reason::AbsentFromExport),
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

#[cfg(test)]
mod tests;
