//! One record per delivery, carried through the batch's stages, and the batch's decoded
//! events beside them.

pub use crate::decide::Decision;
use crate::decide::Planned;
use crate::disposition::Failure;
use crate::event::EventKind;
use crate::store::{EventMeta, EventResult};
use tokio::time::Instant;

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
