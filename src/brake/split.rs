//! Which users of a batch the brake lets through, and which it parks.

use super::Brake;
use super::state::{Engaged, admit};
use crate::decide::{Planned, UserBatch, events_by_user};
use std::collections::HashSet;
use uuid::Uuid;

/// A batch after the brake: what goes on to be applied, and the events to park.
pub(crate) struct Split {
    pub users: Vec<UserBatch>,
    pub losers: Vec<usize>,
    /// Planned indices of every event of every held user.
    pub held: Vec<usize>,
}

impl Brake {
    /// The users (indices into `users`) that deactivate in this batch: a user counts when
    /// any of its events in the batch deactivates, not only the newest, since should the
    /// newest fail, `isolate_failures` applies the older ones, and a deletion among them must
    /// have passed the brake. Deactivations an operator released (`released`, by planned
    /// index) do not count.
    pub(crate) fn deactivating(
        &self,
        planned: &[Planned],
        users: &[UserBatch],
        losers: &[usize],
        released: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        if !self.is_on() {
            return Vec::new();
        }
        let events_of = events_by_user(planned, users, losers);
        (0..users.len())
            .filter(|&u| {
                events_of[&planned[users[u].newest].user_id]
                    .iter()
                    .any(|&i| !released(i) && planned[i].deactivates())
            })
            .collect()
    }

    /// Takes the users the brake holds out of a reduced batch (the `deactivating` ones past
    /// the `granted` room; all of them while engaged) and engages the brake if it was not.
    /// A held user's events are all parked, its superseded ones (`losers`) too, so none is
    /// acknowledged as stale in favour of an event that may never be applied.
    pub(crate) fn split(
        &self,
        planned: &[Planned],
        users: Vec<UserBatch>,
        losers: Vec<usize>,
        deactivating: &[usize],
        granted: usize,
    ) -> Split {
        let engaged = self.state().engaged;
        let held = admit(engaged, granted, deactivating);
        if held.is_empty() {
            return Split {
                users,
                losers,
                held: Vec::new(),
            };
        }
        if engaged == Engaged::No {
            self.engage(held.len());
        }
        let events_of = events_by_user(planned, &users, &losers);
        let held_users: HashSet<Uuid> = held
            .iter()
            .map(|&u| planned[users[u].newest].user_id)
            .collect();
        let parked = |i: &usize| held_users.contains(&planned[*i].user_id);
        let mut held: Vec<usize> = held_users
            .iter()
            .flat_map(|id| events_of[id].clone())
            .collect();
        held.sort_unstable();
        Split {
            held,
            users: users.into_iter().filter(|u| !parked(&u.newest)).collect(),
            losers: losers.into_iter().filter(|l| !parked(l)).collect(),
        }
    }
}
