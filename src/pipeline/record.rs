//! One record per delivery, carried through the batch's stages, and the batch's decoded
//! events beside them.

use crate::decide::{Outcome, Planned};
use crate::error::Failure;
use crate::event::EventKind;
use crate::store::{EventMeta, EventResult};
use tokio::time::Instant;

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

/// Where a delivery stands between stages.
#[derive(Debug)]
pub(crate) enum Fate {
    /// Decoded and planned; waiting for the apply stage.
    Pending,
    Decided(Decision),
    /// To be retried or dead-lettered by the settle stage.
    Failed(Failure),
}

/// One delivery of the batch.
pub(crate) struct Record {
    pub received: Instant,
    /// Index into the batch's `planned` and `meta`, when the body decoded to an event.
    pub event: Option<usize>,
    pub fate: Fate,
}

/// A batch's decoded events, indexed by `Record::event`; `origin` maps back to the record.
#[derive(Default)]
pub(crate) struct Events {
    pub planned: Vec<Planned>,
    pub meta: Vec<EventMeta>,
    pub kinds: Vec<EventKind>,
    pub origin: Vec<usize>,
}

impl Record {
    /// The fate an apply result gives.
    pub fn applied(&mut self, result: EventResult) {
        self.fate = match result {
            EventResult::Done(outcome) => Fate::Decided(Decision::Applied(outcome)),
            EventResult::EmailConflict => Fate::Failed(Failure::EmailConflict),
            EventResult::Rejected(why) => Fate::Failed(Failure::Refused(why)),
        };
    }
}
