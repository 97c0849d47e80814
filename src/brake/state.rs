//! The brake's pure part: whether it holds, the releases seen, and which deactivating users
//! of a batch go ahead once the shared window has granted room. No I/O.

use std::collections::HashSet;

/// Whether the brake holds, and under which `brake_log` entry once that is written (the
/// entry is written in the background: the decision must not wait on the database).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engaged {
    No,
    Yes { logged: Option<i64> },
}

/// The brake of one worker: whether it holds, and the releases it has seen.
#[derive(Debug)]
pub(crate) struct State {
    pub engaged: Engaged,
    /// Tokens of releases found in `brake_log`, so each is looked up once.
    pub releases: HashSet<String>,
}

impl State {
    pub fn new() -> Self {
        Self {
            engaged: Engaged::No,
            releases: HashSet::new(),
        }
    }
}

/// Splits the deactivating users of a batch (in batch order) into those that go ahead and
/// those to hold, given the room the window granted: none go ahead while engaged.
pub(crate) fn admit(engaged: Engaged, granted: usize, deactivating: &[usize]) -> Vec<usize> {
    let room = match engaged {
        Engaged::No => granted,
        Engaged::Yes { .. } => 0,
    };
    deactivating[room.min(deactivating.len())..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_granted_room_deactivations_are_held_and_all_while_engaged() {
        assert_eq!(admit(Engaged::No, 1, &[10, 11, 12]), vec![11, 12]);
        assert_eq!(admit(Engaged::No, 5, &[10, 11]), Vec::<usize>::new());
        let engaged = Engaged::Yes { logged: Some(1) };
        assert_eq!(
            admit(engaged, 5, &[13]),
            vec![13],
            "engaged holds everything"
        );
    }
}
