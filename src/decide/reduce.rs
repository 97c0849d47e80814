//! A batch reduced per user: the events that may still change something, in the order the
//! store locks rows in.

use super::{Intent, Planned};
use std::collections::HashMap;
use uuid::Uuid;

/// A user's share of a batch: the newest event (it may set the status) and the newest
/// event carrying fields for this service (it may set the fields), often the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserBatch {
    pub newest: usize,
    pub upsert: Option<usize>,
}

impl UserBatch {
    /// The events it names: the newest, and the upsert when that is another event.
    pub fn events(&self) -> impl Iterator<Item = usize> {
        let newest = self.newest;
        std::iter::once(newest).chain(self.upsert.filter(move |up| *up != newest))
    }
}

/// Every event of a reduced batch by user: the ones `reduce` kept and the ones it
/// superseded, in no particular order.
pub fn events_by_user(
    planned: &[Planned],
    users: &[UserBatch],
    losers: &[usize],
) -> HashMap<Uuid, Vec<usize>> {
    let mut events_of: HashMap<Uuid, Vec<usize>> = Default::default();
    for i in users
        .iter()
        .flat_map(UserBatch::events)
        .chain(losers.iter().copied())
    {
        events_of.entry(planned[i].user_id).or_default().push(i);
    }
    events_of
}

/// Reduces a batch to one [`UserBatch`] per user, sorted by user id (the order the store
/// locks rows in, so concurrent replicas cannot deadlock), and the indices that can
/// change nothing because a newer event in the same batch supersedes them.
pub fn reduce(planned: &[Planned]) -> (Vec<UserBatch>, Vec<usize>) {
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by(|&a, &b| {
        let (pa, pb) = (&planned[a], &planned[b]);
        pa.user_id.cmp(&pb.user_id).then(pb.key.cmp(&pa.key))
    });
    let mut users: Vec<UserBatch> = Vec::new();
    let mut losers = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        let is_upsert = matches!(planned[i].intent, Intent::Upsert(_));
        let first_of_user = pos == 0 || planned[order[pos - 1]].user_id != planned[i].user_id;
        match users.last_mut() {
            Some(user) if !first_of_user && is_upsert && user.upsert.is_none() => {
                user.upsert = Some(i);
            }
            _ if !first_of_user => losers.push(i),
            _ => users.push(UserBatch {
                newest: i,
                upsert: is_upsert.then_some(i),
            }),
        }
    }
    (users, losers)
}
