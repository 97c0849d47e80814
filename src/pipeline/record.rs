//! One record per delivery, carried through the batch's stages, and the batch's decoded
//! events beside them.

pub use crate::decide::Decision;
use crate::decide::Planned;
use crate::disposition::Failure;
use crate::event::{Event, EventKind};
use crate::store::{EventMeta, EventResult};
use time::OffsetDateTime;
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

impl Events {
    /// A decoded event of record `origin`, planned.
    pub fn push(
        &mut self,
        planned: Planned,
        e: &Event,
        received_at: OffsetDateTime,
        origin: usize,
    ) {
        self.planned.push(planned);
        self.meta.push(EventMeta {
            event_id: e.event_id.clone(),
            event_type: e.kind.as_str(),
            received_at,
        });
        self.kinds.push(e.kind);
        self.origin.push(origin);
    }
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
