//! What became of an event: its outcome in the table, and the decision about its delivery
//! that logs, metrics and the audit trail share.

use super::Reason;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Applied,
    /// Newer than the row, but its fields and status are the row's already: only the
    /// watermark moved (a rerun of an export taken later, an update of another service's
    /// field).
    Unchanged,
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
            Outcome::Unchanged => "unchanged",
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
        (false, Reason::Deleted | Reason::AbsentFromExport) => Outcome::Absent,
        (false, _) => Outcome::NotForService,
    }
}
