//! The trail entries of one committed attempt: each outcome with its reason and the
//! fields it changed, and the events the batch superseded.

use super::audit::{self, Audit};
use super::freed::Freed;
use super::guard::Advanced;
use crate::decide::trail_code::{ReasonKind, reason_kind};
use crate::decide::{Decision, Outcome, Planned, UserBatch};
use sqlx::PgConnection;
use std::collections::{HashMap, HashSet};
use time::OffsetDateTime;
use uuid::Uuid;

/// One trail row before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Another user than the event's (a row whose email the event's user claimed).
    pub user: Option<Uuid>,
    pub planned: usize,
    pub decision: Decision,
    pub reason: ReasonKind,
    /// The time the reason refers to (`ReasonKind`).
    pub about: Option<OffsetDateTime>,
    /// Words that cannot be derived (`ReasonKind::Text`).
    pub text: Option<String>,
    /// `FIELDS` bits.
    pub changed: i16,
}

/// What one attempt did, as its trail needs it.
pub(super) struct AttemptView<'a> {
    pub planned: &'a [Planned],
    pub users: &'a [UserBatch],
    pub set: &'a [usize],
    pub outcomes: &'a [(usize, Outcome)],
    pub advanced: &'a HashMap<Uuid, Advanced>,
    pub existed: &'a HashSet<Uuid>,
    pub inserted: &'a HashSet<Uuid>,
    /// Per data user, the fields the write changed (`audit::FIELDS` bits).
    pub changes: &'a HashMap<Uuid, i16>,
    /// (auth user whose deactivated row lost its email, the user who claimed it).
    pub freed: &'a [Freed],
}

impl AttemptView<'_> {
    pub async fn entries(
        &self,
        tx: &mut PgConnection,
        audit: &Audit<'_>,
        losers: &HashMap<Uuid, Vec<usize>>,
    ) -> Result<Vec<Entry>, sqlx::Error> {
        let newest: HashMap<Uuid, usize> = self
            .set
            .iter()
            .map(|&u| {
                let n = self.users[u].newest;
                (self.planned[n].user_id, n)
            })
            .collect();
        let kept = |o: Outcome| audit.no_ops || !matches!(o, Outcome::Stale | Outcome::Unchanged);
        // Stale users: the status they stand on, to say what the event was older than.
        let stale: Vec<Uuid> = newest
            .keys()
            .filter(|id| audit.no_ops && !self.advanced.contains_key(id))
            .copied()
            .collect();
        let stored = if stale.is_empty() {
            HashMap::new()
        } else {
            audit::status_timestamps(tx, &stale).await?
        };

        let mut entries = Vec::with_capacity(self.outcomes.len());
        for &(p, outcome) in self.outcomes.iter().filter(|(_, o)| kept(*o)) {
            let id = self.planned[p].user_id;
            let is_newest = newest.get(&id) == Some(&p);
            let a = self.advanced.get(&id);
            let applied_ts = a.map(|a| a.status_ts).or_else(|| stored.get(&id).copied());
            let changed = match (is_newest, self.changes.get(&id), a) {
                (true, Some(mask), _) => *mask,
                (true, None, Some(a))
                    if self.existed.contains(&id) && a.prev_active != Some(a.active) =>
                {
                    audit::STATUS_FIELDS
                }
                _ => 0,
            };
            let inserted = is_newest && self.inserted.contains(&id);
            let reason = reason_kind(outcome, &self.planned[p].intent, inserted);
            let refers = matches!(reason, ReasonKind::Stale | ReasonKind::Backfilled);
            entries.push(Entry {
                user: None,
                planned: p,
                decision: Decision::Applied(outcome),
                reason,
                about: applied_ts.filter(|_| refers),
                text: None,
                changed,
            });
        }
        // Superseded events changed nothing: lines only where such events get them.
        for (id, &n) in newest.iter().filter(|_| audit.no_ops) {
            let ts = self.planned[n].key.timestamp;
            for &l in losers.get(id).into_iter().flatten() {
                entries.push(Entry {
                    user: None,
                    planned: l,
                    decision: Decision::Applied(Outcome::Stale),
                    reason: ReasonKind::Superseded,
                    about: Some(ts),
                    text: None,
                    changed: 0,
                });
            }
        }
        self.freed_entries(&newest, &mut entries);
        Ok(entries)
    }

    /// The freed row's user, under the claiming event: its email changed (to the
    /// tombstone), its status did not.
    fn freed_entries(&self, newest: &HashMap<Uuid, usize>, entries: &mut Vec<Entry>) {
        for freed in self.freed {
            if let Some(&n) = newest.get(&freed.claimer) {
                let from = freed
                    .email
                    .as_ref()
                    .map_or(String::new(), |e| format!(" {e}"));
                entries.push(Entry {
                    user: Some(freed.user),
                    planned: n,
                    decision: Decision::Applied(Outcome::Applied),
                    reason: ReasonKind::Text,
                    about: None,
                    text: Some(format!("email{from} freed for auth user {}", freed.claimer)),
                    // `email`, the first of `audit::FIELDS`.
                    changed: 1,
                });
            }
        }
    }
}
