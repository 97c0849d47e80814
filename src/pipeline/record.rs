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
    /// Index into the batch's `refused`, when the target table refused the event.
    pub refused: Option<usize>,
    pub fate: Fate,
}

/// A batch's decoded events, indexed by `Record::event`; `origin` maps back to the record.
#[derive(Default)]
pub(crate) struct Events {
    pub planned: Vec<Planned>,
    pub meta: Vec<EventMeta>,
    pub kinds: Vec<EventKind>,
    pub origin: Vec<usize>,
    /// Events the target table refused (a computed column too long): never applied, kept
    /// for their dead letter's log line and trail row.
    pub refused: Vec<(Planned, EventMeta, EventKind)>,
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
        self.meta.push(meta(e, received_at));
        self.kinds.push(e.kind);
        self.origin.push(origin);
    }

    /// A decoded event the target table refused; its index in `refused`.
    pub fn refuse(&mut self, planned: Planned, e: &Event, received_at: OffsetDateTime) -> usize {
        self.refused.push((planned, meta(e, received_at), e.kind));
        self.refused.len() - 1
    }

    /// The event of a record (its `event` and `refused`), applied or refused.
    pub fn of(
        &self,
        event: Option<usize>,
        refused: Option<usize>,
    ) -> Option<(&Planned, &EventMeta, EventKind)> {
        match (event, refused) {
            (Some(p), _) => Some((&self.planned[p], &self.meta[p], self.kinds[p])),
            (None, Some(r)) => self.refused.get(r).map(|(p, m, k)| (p, m, *k)),
            (None, None) => None,
        }
    }
}

fn meta(e: &Event, received_at: OffsetDateTime) -> EventMeta {
    EventMeta {
        event_id: e.event_id.clone(),
        event_type: e.kind.as_str(),
        received_at,
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
