//! Failure classes and the one place that maps a message's failure to ack, retry or
//! dead-letter.

/// Why one message could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Can never succeed (docs/contract.md#permanent-dead-lettered-at-once): dead-lettered
    /// at once.
    Permanent(String),
    /// Another active user holds the email; a later event may free it.
    EmailConflict,
    /// The database refused this one change (a constraint or trigger of the backend's,
    /// say): retried in case an operator fixes the cause, then dead-lettered.
    Refused(String),
    /// `EVENT_SIGNING_KEYS` is set and the signature is missing or wrong: dead-lettered at
    /// once, since no retry can make it right.
    BadSignature(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Republish to retry tier `tier` (0-based) with the attempt count raised.
    Retry {
        tier: usize,
    },
    DeadLetter {
        kind: DeadKind,
        reason: String,
    },
}

/// The `x-error-kind` header of a dead letter. Its command-line names (`dlq replay
/// --kind`) are the header's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum DeadKind {
    Permanent,
    RetriesExhausted,
    EmailConflict,
    BadSignature,
}

impl DeadKind {
    /// Every kind, so the metrics can export each at 0 from the start.
    pub const ALL: [DeadKind; 4] = [
        DeadKind::Permanent,
        DeadKind::RetriesExhausted,
        DeadKind::EmailConflict,
        DeadKind::BadSignature,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadKind::Permanent => "permanent",
            DeadKind::RetriesExhausted => "retries_exhausted",
            DeadKind::EmailConflict => "email_conflict",
            DeadKind::BadSignature => "bad_signature",
        }
    }
}

/// `attempts` counts the failed deliveries of this message so far, this one included.
pub fn disposition(
    failure: &Failure,
    attempts: u32,
    max_attempts: u32,
    tiers: usize,
) -> Disposition {
    match failure {
        Failure::Permanent(reason) => Disposition::DeadLetter {
            kind: DeadKind::Permanent,
            reason: reason.clone(),
        },
        Failure::BadSignature(reason) => Disposition::DeadLetter {
            kind: DeadKind::BadSignature,
            reason: reason.to_string(),
        },
        Failure::EmailConflict if attempts >= max_attempts => Disposition::DeadLetter {
            kind: DeadKind::EmailConflict,
            reason: format!("email held by another active user after {attempts} attempts"),
        },
        Failure::Refused(reason) if attempts >= max_attempts => Disposition::DeadLetter {
            kind: DeadKind::RetriesExhausted,
            reason: format!("{reason} after {attempts} attempts"),
        },
        Failure::EmailConflict | Failure::Refused(_) => Disposition::Retry {
            tier: (attempts.saturating_sub(1) as usize).min(tiers.saturating_sub(1)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_goes_straight_to_the_dlq() {
        let d = disposition(&Failure::Permanent("bad".into()), 1, 5, 3);
        assert!(matches!(
            d,
            Disposition::DeadLetter {
                kind: DeadKind::Permanent,
                ..
            }
        ));
    }

    #[test]
    fn a_bad_signature_is_dead_lettered_at_once_as_its_own_kind() {
        let d = disposition(&Failure::BadSignature("no x-signature header"), 1, 5, 3);
        assert_eq!(
            d,
            Disposition::DeadLetter {
                kind: DeadKind::BadSignature,
                reason: "no x-signature header".into()
            }
        );
        assert_eq!(DeadKind::BadSignature.as_str(), "bad_signature");
    }

    #[test]
    fn the_command_lines_kinds_are_the_headers_values() {
        use clap::ValueEnum;
        assert_eq!(DeadKind::value_variants(), DeadKind::ALL);
        for kind in DeadKind::ALL {
            let name = kind.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(name.as_deref(), Some(kind.as_str()));
        }
    }

    #[test]
    fn conflicts_climb_the_tiers_then_dead_letter() {
        let tiers: Vec<_> = (1..=4)
            .map(|a| disposition(&Failure::EmailConflict, a, 5, 3))
            .collect();
        assert_eq!(
            tiers,
            [0, 1, 2, 2]
                .map(|tier| Disposition::Retry { tier })
                .to_vec()
        );
        assert!(matches!(
            disposition(&Failure::EmailConflict, 5, 5, 3),
            Disposition::DeadLetter {
                kind: DeadKind::EmailConflict,
                ..
            }
        ));
        let refused = Failure::Refused("SQLSTATE 23514".into());
        assert_eq!(
            disposition(&refused, 1, 5, 3),
            Disposition::Retry { tier: 0 }
        );
        assert!(matches!(
            disposition(&refused, 5, 5, 3),
            Disposition::DeadLetter {
                kind: DeadKind::RetriesExhausted,
                ..
            }
        ));
    }
}
