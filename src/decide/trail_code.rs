//! A trail line's event type, decision and reason kind packed into one `smallint`
//! (`audit_trail.code`), and the reason's words, derived from the kind: the one place they
//! are written.
//!
//! Bits 0-2: the event type, its index in [`EVENT_TYPES`] plus one, or 0 for a type not
//! listed (its name is then stored as text). Bits 3-6: the decision, its index in
//! [`DECISIONS`]. Bits 7-11: the reason kind, its index in [`REASON_KINDS`]. Each list holds
//! every value of its kind, and only grows at its end: a code once written keeps its
//! meaning, and the release before a new value reads it as no meaning (see `decode`), as
//! it reads a code with any of bits 12-15 set, which this release never writes. `explain`
//! shows a part without a meaning as the code itself (`shown`).

use super::{Decision, Intent, Outcome, Reason};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// The event types with a code.
pub const EVENT_TYPES: [&str; 5] = [
    "user.created",
    "user.updated",
    "user.deleted",
    "import",
    "reconcile",
];

/// The decisions, in code order.
pub const DECISIONS: [Decision; 12] = [
    Decision::Applied(Outcome::Applied),
    Decision::Applied(Outcome::Unchanged),
    Decision::Applied(Outcome::Reactivated),
    Decision::Applied(Outcome::Deactivated),
    Decision::Applied(Outcome::NotForService),
    Decision::Applied(Outcome::Absent),
    Decision::Applied(Outcome::Backfilled),
    Decision::Applied(Outcome::Stale),
    Decision::Ignored,
    Decision::Held,
    Decision::Retried,
    Decision::DeadLettered,
];

/// Why a line has its decision, as far as it can be derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonKind {
    /// Not derivable: the words are stored as they are (a dead letter's error, a freed
    /// email's line), or there are none.
    Text,
    NewRow,
    FieldsUpdated,
    NothingToChange,
    ActiveAgain,
    /// Deactivated, or not for this service, for this reason.
    Because(Reason),
    /// Deactivated by an event that gave no reason.
    Inactive,
    DeletedBeforeRow,
    /// Older than the event the status stands on (its time: `about`), fields filled in.
    Backfilled,
    /// Older than the event the status stands on (its time: `about`).
    Stale,
    /// Superseded in its batch by the event of `about`.
    Superseded,
}

/// The reason kinds, in code order.
pub const REASON_KINDS: [ReasonKind; 14] = [
    ReasonKind::Text,
    ReasonKind::NewRow,
    ReasonKind::FieldsUpdated,
    ReasonKind::NothingToChange,
    ReasonKind::ActiveAgain,
    ReasonKind::Because(Reason::Deleted),
    ReasonKind::Because(Reason::AccessRevoked),
    ReasonKind::Because(Reason::InactiveUpstream),
    ReasonKind::Because(Reason::AbsentFromExport),
    ReasonKind::Inactive,
    ReasonKind::DeletedBeforeRow,
    ReasonKind::Backfilled,
    ReasonKind::Stale,
    ReasonKind::Superseded,
];

/// The event type's bits of a code (`code & TYPE_BITS` is its `event_type_code`).
pub const TYPE_BITS: i16 = 0b111;
const DECISION_SHIFT: u32 = 3;
const DECISION_BITS: i16 = 0b1111;
const REASON_SHIFT: u32 = 7;
const REASON_BITS: i16 = 0b1_1111;
/// The bits the three fields take; the rest are a later release's.
const FIELD_BITS: u32 = 12;

/// The code of an event type; 0 when it has none (store its name as text).
pub fn event_type_code(event_type: &str) -> i16 {
    EVENT_TYPES
        .iter()
        .position(|t| *t == event_type)
        .map_or(0, |i| i as i16 + 1)
}

/// The code of a line; the event type's bits are 0 when it has no code.
pub fn encode(event_type: &str, decision: Decision, reason: ReasonKind) -> i16 {
    let d = DECISIONS.iter().position(|x| *x == decision).unwrap_or(0) as i16;
    let r = REASON_KINDS.iter().position(|x| *x == reason).unwrap_or(0) as i16;
    event_type_code(event_type) | d << DECISION_SHIFT | r << REASON_SHIFT
}

/// A code read back, each part `None` when this release has no meaning for it (a later
/// release's value), or, for the event type, when the type was stored as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub event_type: Option<&'static str>,
    pub decision: Option<Decision>,
    pub reason: Option<ReasonKind>,
}

pub(crate) fn decode(code: i16) -> Decoded {
    if code as u16 >> FIELD_BITS != 0 {
        // A bit past the fields: a later release's layout, which no part can be read in.
        return Decoded {
            event_type: None,
            decision: None,
            reason: None,
        };
    }
    let t = (code & TYPE_BITS) as usize;
    let d = (code >> DECISION_SHIFT & DECISION_BITS) as usize;
    let r = (code >> REASON_SHIFT & REASON_BITS) as usize;
    Decoded {
        event_type: t.checked_sub(1).and_then(|i| EVENT_TYPES.get(i)).copied(),
        decision: DECISIONS.get(d).copied(),
        reason: REASON_KINDS.get(r).copied(),
    }
}

/// A line's event type, decision and reason as `explain` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shown {
    pub event_type: String,
    pub decision: String,
    pub reason: Option<String>,
}

/// What a line of `audit_trail` says: its code read, the reason's words derived for
/// `service` or, where they cannot be, the stored `text`.
pub(crate) fn shown(
    code: i16,
    type_text: Option<String>,
    text: Option<String>,
    about: Option<OffsetDateTime>,
    service: &str,
) -> Shown {
    let d = decode(code);
    let unknown = || format!("code {code}");
    let reason = match d.reason {
        Some(ReasonKind::Text) => text,
        Some(kind) => words(kind, service, about),
        None => text.or_else(|| Some(unknown())),
    };
    Shown {
        event_type: type_text
            .or(d.event_type.map(String::from))
            .unwrap_or_else(unknown),
        decision: d.decision.map_or_else(unknown, |d| d.as_str().to_string()),
        reason,
    }
}

/// The reason kind of an event's outcome (`inserted`: the write created the row).
pub(crate) fn reason_kind(outcome: Outcome, intent: &Intent, inserted: bool) -> ReasonKind {
    match (outcome, intent) {
        (Outcome::Applied, _) if inserted => ReasonKind::NewRow,
        (Outcome::Applied, _) => ReasonKind::FieldsUpdated,
        (Outcome::Unchanged, _) => ReasonKind::NothingToChange,
        (Outcome::Reactivated, _) => ReasonKind::ActiveAgain,
        (Outcome::Deactivated, Intent::Deactivate(r)) => ReasonKind::Because(*r),
        (Outcome::Deactivated, Intent::Upsert(row)) => row
            .deactivation_reason
            .map_or(ReasonKind::Inactive, ReasonKind::Because),
        (Outcome::NotForService, _) => ReasonKind::Because(Reason::AccessRevoked),
        (Outcome::Absent, _) => ReasonKind::DeletedBeforeRow,
        (Outcome::Backfilled, _) => ReasonKind::Backfilled,
        (Outcome::Stale, _) => ReasonKind::Stale,
    }
}

/// The time a reason names, to the microsecond, in UTC: the same words whether the time
/// comes from an event or back from the database.
pub(crate) fn at(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// A reason in words for support staff; `None` for [`ReasonKind::Text`], whose words are
/// stored. `about` is the time the kind refers to (see [`ReasonKind`]); `service` is this
/// service's name.
pub(crate) fn words(
    kind: ReasonKind,
    service: &str,
    about: Option<OffsetDateTime>,
) -> Option<String> {
    let applied = || about.map_or("a newer event".into(), |t| format!("event of {}", at(t)));
    Some(match kind {
        ReasonKind::Text => return None,
        ReasonKind::NewRow => "new row".into(),
        ReasonKind::FieldsUpdated => "fields updated".into(),
        ReasonKind::NothingToChange => "nothing to change".into(),
        ReasonKind::ActiveAgain => "active again".into(),
        ReasonKind::Because(Reason::Deleted) => "deleted upstream".into(),
        ReasonKind::Because(Reason::AccessRevoked) => format!("{service} not in allowed services"),
        ReasonKind::Because(Reason::InactiveUpstream) => "inactive upstream".into(),
        ReasonKind::Because(Reason::AbsentFromExport) => "absent from a full export".into(),
        ReasonKind::Inactive => "inactive".into(),
        ReasonKind::DeletedBeforeRow => "deleted before this service had a row".into(),
        ReasonKind::Backfilled => format!(
            "older than the applied {}: fields filled in, status kept",
            applied()
        ),
        ReasonKind::Stale => format!("older than the applied {}", applied()),
        ReasonKind::Superseded => match about {
            Some(t) => format!("superseded in the same batch by the event of {}", at(t)),
            None => "superseded in the same batch by a newer event".into(),
        },
    })
}

/// An event id as stored: a canonical UUID in its 16 bytes, anything else verbatim as text
/// (a UUID in another spelling too, so that it reads back as it came).
pub(crate) fn split_event_id(id: Option<&str>) -> (Option<Uuid>, Option<&str>) {
    match id.map(|s| (s, Uuid::parse_str(s))) {
        None => (None, None),
        Some((s, Ok(u))) if u.hyphenated().to_string() == s => (Some(u), None),
        Some((s, _)) => (None, Some(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn line() -> impl Strategy<Value = (&'static str, Decision, ReasonKind)> {
        (
            proptest::sample::select(EVENT_TYPES.to_vec()),
            proptest::sample::select(DECISIONS.to_vec()),
            proptest::sample::select(REASON_KINDS.to_vec()),
        )
    }

    proptest! {
        /// Every event type, decision and reason kind reads back from its code.
        #[test]
        fn every_code_reads_back_as_written((t, d, r) in line()) {
            let code = encode(t, d, r);
            prop_assert!(code >= 0);
            prop_assert_eq!(decode(code), Decoded { event_type: Some(t), decision: Some(d), reason: Some(r) });
        }

        /// A type without a code keeps the decision and reason, and reads back as no type.
        #[test]
        fn a_type_without_a_code_reads_back_as_none(t in "[a-z.]{0,20}", (_, d, r) in line()) {
            prop_assume!(!EVENT_TYPES.contains(&t.as_str()));
            let back = decode(encode(&t, d, r));
            prop_assert_eq!(back, Decoded { event_type: None, decision: Some(d), reason: Some(r) });
        }
    }

    /// Two different lines never share a code.
    #[test]
    fn codes_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for t in EVENT_TYPES.iter().copied().chain(["other"]) {
            for d in DECISIONS {
                for r in REASON_KINDS {
                    assert!(seen.insert(encode(t, d, r)), "{t} {d:?} {r:?}");
                }
            }
        }
        assert_eq!(seen.len(), 6 * DECISIONS.len() * REASON_KINDS.len());
    }

    /// A code from a later release (a value past the lists) decodes to no meaning, not to
    /// another one.
    #[test]
    fn a_later_release_s_values_decode_to_none() {
        let code = (DECISIONS.len() as i16) << DECISION_SHIFT
            | (REASON_KINDS.len() as i16) << REASON_SHIFT
            | 6;
        assert_eq!(
            decode(code),
            Decoded {
                event_type: None,
                decision: None,
                reason: None
            }
        );
    }

    /// A code with a bit past the three fields (a later release's wider field or new flag)
    /// has no meaning here: read as one of this release's values, it would say something
    /// the line does not.
    #[test]
    fn a_code_with_bits_past_its_fields_has_no_meaning() {
        let code = encode("user.created", DECISIONS[0], ReasonKind::NewRow);
        for bit in 12..16 {
            let later = code | (1u16 << bit) as i16;
            let none = Decoded {
                event_type: None,
                decision: None,
                reason: None,
            };
            assert_eq!(decode(later), none, "bit {bit}");
        }
    }

    /// A line of a later release reads as its code where this release has no meaning for
    /// a part, never as a blank reason; its stored words still show.
    #[test]
    fn a_later_release_s_line_shows_its_code_not_a_blank() {
        let ts = Some(datetime!(2024-03-01 00:00 UTC));
        let later_reason = encode("user.updated", DECISIONS[3], ReasonKind::NewRow)
            & !(REASON_BITS << REASON_SHIFT)
            | (REASON_KINDS.len() as i16) << REASON_SHIFT;
        let s = shown(later_reason, None, None, ts, "lms");
        assert_eq!(s.event_type, "user.updated");
        assert_eq!(s.decision, "deactivated");
        assert_eq!(s.reason, Some(format!("code {later_reason}")));
        let words = shown(later_reason, None, Some("why".into()), ts, "lms");
        assert_eq!(words.reason.as_deref(), Some("why"));
        let later_all = 7 | (DECISIONS.len() as i16) << DECISION_SHIFT;
        let s = shown(later_all, None, None, None, "lms");
        let code = format!("code {later_all}");
        assert_eq!((s.event_type, s.decision), (code.clone(), code.clone()));
        assert_eq!(s.reason, None, "reason kind 0: the stored words, here none");
        let typed = shown(later_all, Some("user.merged".into()), None, None, "lms");
        assert_eq!(typed.event_type, "user.merged");
    }

    /// A line this release wrote reads back with its words derived for the service.
    #[test]
    fn a_line_reads_back_with_its_derived_words() {
        let revoked = ReasonKind::Because(Reason::AccessRevoked);
        let code = encode("user.updated", DECISIONS[4], revoked);
        let s = shown(code, None, None, None, "lms");
        assert_eq!(
            (
                s.event_type.as_str(),
                s.decision.as_str(),
                s.reason.as_deref()
            ),
            (
                "user.updated",
                "not-for-this-service",
                Some("lms not in allowed services")
            )
        );
        let text = encode("user.deleted", Decision::DeadLettered, ReasonKind::Text);
        let s = shown(text, None, Some("permanent: x".into()), None, "lms");
        assert_eq!(s.reason.as_deref(), Some("permanent: x"));
        assert_eq!(s.decision, "dead-lettered");
    }

    #[test]
    fn reasons_say_why_in_words() {
        let ts = datetime!(2024-03-01 00:00 UTC);
        let w = |k| words(k, "lms", Some(ts)).unwrap();
        let revoked = ReasonKind::Because(Reason::AccessRevoked);
        assert_eq!(w(revoked), "lms not in allowed services");
        assert_eq!(
            w(ReasonKind::Stale),
            "older than the applied event of 2024-03-01T00:00:00Z"
        );
        assert_eq!(
            w(ReasonKind::Backfilled),
            "older than the applied event of 2024-03-01T00:00:00Z: fields filled in, status kept"
        );
        assert_eq!(
            w(ReasonKind::Superseded),
            "superseded in the same batch by the event of 2024-03-01T00:00:00Z"
        );
        assert_eq!(
            words(ReasonKind::Stale, "lms", None).unwrap(),
            "older than the applied a newer event"
        );
        assert_eq!(
            w(ReasonKind::DeletedBeforeRow),
            "deleted before this service had a row"
        );
        assert_eq!(words(ReasonKind::Text, "lms", Some(ts)), None);
        let offset = datetime!(2024-03-01 02:00:00.000001 +02:00);
        assert_eq!(at(offset), "2024-03-01T00:00:00.000001Z");
    }

    #[test]
    fn outcomes_have_their_reason_kinds() {
        let revoke = Intent::Deactivate(Reason::AccessRevoked);
        assert_eq!(
            reason_kind(Outcome::Deactivated, &revoke, false),
            ReasonKind::Because(Reason::AccessRevoked)
        );
        assert_eq!(
            reason_kind(Outcome::NotForService, &revoke, false),
            ReasonKind::Because(Reason::AccessRevoked)
        );
        assert_eq!(
            reason_kind(Outcome::Applied, &revoke, true),
            ReasonKind::NewRow
        );
        assert_eq!(
            reason_kind(Outcome::Applied, &revoke, false),
            ReasonKind::FieldsUpdated
        );
        let deleted = Intent::Deactivate(Reason::Deleted);
        assert_eq!(
            reason_kind(Outcome::Absent, &deleted, false),
            ReasonKind::DeletedBeforeRow
        );
    }

    /// A canonical UUID is stored in its bytes; any other id (another spelling of a UUID
    /// included) as text, so that each reads back as it came.
    #[test]
    fn event_ids_split_into_uuid_or_text() {
        let canonical = "6f1c1c55-0e4a-4a8e-9a39-2a1d3c4b5e6f";
        let (u, t) = split_event_id(Some(canonical));
        assert_eq!(
            (u.map(|u| u.to_string()), t),
            (Some(canonical.to_string()), None)
        );
        for other in [
            "6F1C1C55-0E4A-4A8E-9A39-2A1D3C4B5E6F",
            "6f1c1c550e4a4a8e9a392a1d3c4b5e6f",
            "evt-42",
            "",
        ] {
            assert_eq!(split_event_id(Some(other)), (None, Some(other)));
        }
        assert_eq!(split_event_id(None), (None, None));
    }
}
