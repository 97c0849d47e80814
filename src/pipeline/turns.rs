//! Applying a batch beside the batches in flight before it (see `gate`): the users none of
//! them is applying go at once, the others once they all have applied.

use super::gate::Gate;
use super::record::Events;
use super::{Pipeline, Trail, isolate_failures};
use crate::decide::UserBatch;
use crate::pause::{Pause, Stop};
use crate::store::{Commit, EventResult};
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

impl Pipeline {
    /// Applies `users` (and their superseded `losers`) in turn with the batches ahead: the
    /// users none of them is applying at once, the others once they have applied; each
    /// part waits out an outage with `pause`. Returns every event's result. Each part is a transaction of its own (or
    /// a few, when one fails and is isolated), so a part already committed is never
    /// applied again when the next waits out an outage.
    pub(super) async fn take_turns(
        &self,
        events: &Events,
        users: Vec<UserBatch>,
        losers: Vec<usize>,
        gate: &mut Gate,
        pause: &Pause,
        shutdown: &CancellationToken,
    ) -> Result<Vec<(usize, EventResult)>, Stop> {
        let planned = &events.planned;
        let (later, now): (Vec<UserBatch>, Vec<UserBatch>) = users
            .into_iter()
            .partition(|u| gate.ahead_of(&planned[u.newest].user_id));
        let waiting: HashSet<Uuid> = later.iter().map(|u| planned[u.newest].user_id).collect();
        let (later_losers, now_losers): (Vec<usize>, Vec<usize>) = losers
            .into_iter()
            .partition(|&l| waiting.contains(&planned[l].user_id));
        let (mut later, mut later_losers) = (later, later_losers);
        let started = Instant::now();
        let mut results = self
            .commit_part(events, &now, &now_losers, pause, shutdown)
            .await?;
        // An email conflict met beside batches still applying may be one of them freeing
        // the email (user 1 renamed in batch N, user 2 taking the old address in N + 1).
        // Applied in delivery order there is no conflict: those users wait for the batches
        // before, like the users those batches are applying, and are tried again after
        // them. Without this the event climbed the retry tiers, and was dead-lettered if
        // the batch before took longer than they last.
        if gate.waits() {
            let conflicted: HashSet<Uuid> = results
                .iter()
                .filter(|(_, r)| matches!(r, EventResult::EmailConflict))
                .map(|&(p, _)| planned[p].user_id)
                .collect();
            if !conflicted.is_empty() {
                let of = |p: usize| conflicted.contains(&planned[p].user_id);
                // Their older events may have committed around the conflict; applied
                // again after, they are stale.
                results.retain(|&(p, _)| !of(p));
                later.extend(now.iter().filter(|u| of(u.newest)).copied());
                later.sort_by_key(|u| planned[u.newest].user_id);
                later_losers.extend(now_losers.iter().copied().filter(|&l| of(l)));
            }
        }
        let (applied, mut waited) = (Instant::now(), Duration::ZERO);
        if !later.is_empty() {
            gate.ahead_applied().await;
            waited = applied.elapsed();
            let part = self.commit_part(events, &later, &later_losers, pause, shutdown);
            results.extend(part.await?);
        }
        gate.applied();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::debug!(
            users = now.len(),
            ms = ms(applied - started),
            later = later.len(),
            waited_ms = ms(waited),
            later_ms = ms(applied.elapsed() - waited),
            "batch applied"
        );
        Ok(results)
    }

    /// Commits one part, its failures isolated (see `isolate_failures`), once the database
    /// answers.
    async fn commit_part(
        &self,
        events: &Events,
        users: &[UserBatch],
        losers: &[usize],
        pause: &Pause,
        shutdown: &CancellationToken,
    ) -> Result<Vec<(usize, EventResult)>, Stop> {
        if users.is_empty() && losers.is_empty() {
            return Ok(Vec::new());
        }
        let trail = (self.settings.audit_retention_days > 0).then(|| Trail {
            service: &self.settings.service_name,
            meta: &events.meta,
            no_ops: true,
        });
        let planned = &events.planned;
        pause
            .wait_out(shutdown, || {
                isolate_failures(&self.store, planned, users, losers, Commit::Yes, trail)
            })
            .await
    }
}
