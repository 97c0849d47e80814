//! The mass-deactivation brake's part of a batch (see `crate::brake`): hold what would
//! cross the threshold, engage and release, restore after a restart.

use super::{HOLD_DURING_OUTAGE, Pipeline, Stop};
use crate::backoff::Backoff;
use crate::decide::{Intent, Outcome, Planned, UserBatch};
use crate::headers::Route;
use crate::store::EventResult;
use lapin::message::Delivery;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

impl Pipeline {
    /// Which deliveries of the batch an operator released from the hold queue: those whose
    /// release header names a release recorded in the brake log. The log, not the header
    /// alone, decides, so a producer cannot wave deactivations past the brake; and it is
    /// shared, so every replica admits what one release moved back.
    pub(super) async fn released(
        &self,
        batch: &[(Delivery, Instant)],
        shutdown: &CancellationToken,
    ) -> Result<Vec<bool>, Stop> {
        if self.settings.deactivation_brake == 0 {
            return Ok(vec![false; batch.len()]);
        }
        let tokens: Vec<Option<String>> = batch
            .iter()
            .map(|(d, _)| Route::of(d).release_token())
            .collect();
        let mut unknown: Vec<String> = {
            let brake = self.brake.lock().expect("brake lock");
            let new = |t: &&String| !brake.releases.contains(*t);
            tokens.iter().flatten().filter(new).cloned().collect()
        };
        if !unknown.is_empty() {
            unknown.sort();
            unknown.dedup();
            let recorded = self.recorded_releases(&unknown, shutdown).await?;
            self.brake
                .lock()
                .expect("brake lock")
                .releases
                .extend(recorded);
        }
        let brake = self.brake.lock().expect("brake lock");
        Ok(tokens
            .iter()
            .map(|t| t.as_ref().is_some_and(|t| brake.releases.contains(t)))
            .collect())
    }

    /// Asks the brake log, holding the batch through a database outage as `apply_holding`
    /// does: a released deactivation must never be parked again for want of an answer.
    async fn recorded_releases(
        &self,
        tokens: &[String],
        shutdown: &CancellationToken,
    ) -> Result<Vec<String>, Stop> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let started = Instant::now();
        loop {
            match self.store.brake_release_tokens(tokens).await {
                Ok(found) => return Ok(found),
                Err(e) => {
                    self.mark_paused(&e);
                    if started.elapsed() > HOLD_DURING_OUTAGE {
                        return Err(Stop::DatabaseDown);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Err(Stop::Shutdown),
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Takes out of the batch the deactivations the brake holds (`hold` is called with each
    /// of their event indices) and engages the brake if it was not. Nothing is held unless
    /// a deactivation would take the window past `DEACTIVATION_BRAKE`; deactivations an
    /// operator released (`released`, by event index) always go ahead.
    ///
    /// A user counts as deactivating when any of its events in the batch deactivates, not
    /// only the newest: should the newest fail, `apply_isolated` applies the older ones,
    /// and a deletion among them must have passed the brake. A held user's events are all
    /// parked, its superseded ones (`losers`) too, so none is acknowledged as stale in
    /// favour of an event that may never be applied.
    pub(super) fn brake_split(
        &self,
        planned: &[Planned],
        users: Vec<UserBatch>,
        losers: Vec<usize>,
        released: impl Fn(usize) -> bool,
        mut hold: impl FnMut(usize),
    ) -> (Vec<UserBatch>, Vec<usize>) {
        if self.settings.deactivation_brake == 0 {
            return (users, losers);
        }
        let mut events_of: HashMap<Uuid, Vec<usize>> = HashMap::new();
        let named = users
            .iter()
            .flat_map(|u| std::iter::once(u.newest).chain(u.upsert.filter(|up| *up != u.newest)));
        for i in named.chain(losers.iter().copied()) {
            events_of.entry(planned[i].user_id).or_default().push(i);
        }
        let deactivating: Vec<usize> = (0..users.len())
            .filter(|&u| {
                let events = &events_of[&planned[users[u].newest].user_id];
                events
                    .iter()
                    .any(|&i| !released(i) && deactivates(&planned[i]))
            })
            .collect();
        if deactivating.is_empty() {
            return (users, losers);
        }
        let (held, was_engaged) = {
            let mut brake = self.brake.lock().expect("brake lock");
            let (_, held) = brake.admit(std::time::Instant::now(), &deactivating);
            (held, brake.engaged.is_some())
        };
        if held.is_empty() {
            return (users, losers);
        }
        if !was_engaged {
            self.engage_brake(held.len());
        }
        let mut kept = Vec::with_capacity(users.len() - held.len());
        let mut parked = std::collections::HashSet::new();
        for (u, user) in users.into_iter().enumerate() {
            if held.binary_search(&u).is_ok() {
                let id = planned[user.newest].user_id;
                events_of[&id].iter().for_each(|&i| hold(i));
                parked.insert(id);
            } else {
                kept.push(user);
            }
        }
        let losers = losers
            .into_iter()
            .filter(|&l| !parked.contains(&planned[l].user_id))
            .collect();
        (kept, losers)
    }

    /// Marks the brake engaged; the log entry (written in the background: the decision
    /// must not wait on the database) lets `user-sync brake release` reach every replica.
    fn engage_brake(&self, held: usize) {
        let limit = self.settings.deactivation_brake;
        let window = self.settings.deactivation_brake_window.as_secs();
        tracing::error!(
            threshold = limit,
            window_s = window,
            held,
            queue = %self.topo.hold,
            "MASS DEACTIVATION BRAKE ENGAGED: more than {limit} deactivations within {window} s; \
             deactivations are parked until `user-sync brake release`"
        );
        self.metrics.set_brake(true);
        self.brake.lock().expect("brake lock").engaged = Some(0);
        let (store, brake) = (self.store.clone(), self.brake.clone());
        let detail = format!("more than {limit} deactivations within {window} s");
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
            loop {
                match store.brake_engaged(limit, &detail).await {
                    Ok(id) => {
                        let mut b = brake.lock().expect("brake lock");
                        if b.engaged.is_some() {
                            b.engaged = Some(id);
                        }
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "brake engaged; recording it failed, retrying")
                    }
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        });
    }

    /// Counts the batch's deactivations in the window, but for those an operator released.
    pub(super) fn brake_record(
        &self,
        results: &[(usize, EventResult)],
        released: impl Fn(usize) -> bool,
    ) {
        if self.settings.deactivation_brake == 0 {
            return;
        }
        let n = results
            .iter()
            .filter(|(p, r)| *r == EventResult::Done(Outcome::Deactivated) && !released(*p))
            .count();
        let mut brake = self.brake.lock().expect("brake lock");
        brake.window.record(std::time::Instant::now(), n as u32);
    }

    /// While engaged, asks the brake log whether an operator released it (called before
    /// each batch and once a second while idle).
    pub async fn poll_brake(&self) {
        let engaged = self.brake.lock().expect("brake lock").engaged;
        let Some(id) = engaged.filter(|id| *id > 0) else {
            return;
        };
        if let Ok(Some(last)) = self.store.brake_last().await
            && !last.engaged
            && last.id > id
        {
            let mut brake = self.brake.lock().expect("brake lock");
            brake.engaged = None;
            brake.window.clear();
            self.metrics.set_brake(false);
            tracing::warn!("deactivation brake released by an operator; deactivations flow again");
        }
    }

    /// At start: a brake engaged before a restart stays engaged, unless the threshold was
    /// raised above the one it engaged at (or the brake turned off).
    pub async fn restore_brake(&self) -> Result<(), sqlx::Error> {
        let Some(last) = self.store.brake_last().await? else {
            return Ok(());
        };
        if !last.engaged {
            return Ok(());
        }
        let limit = self.settings.deactivation_brake;
        let was = last.threshold.unwrap_or(0);
        if limit == 0 || i64::from(limit) > was {
            let why = format!("restarted with DEACTIVATION_BRAKE raised from {was} to {limit}");
            self.store.brake_released(&why, None).await?;
            tracing::warn!(
                hold = %self.topo.hold,
                "{why}: brake released; deactivations parked before stay in the hold queue until `user-sync brake release`"
            );
        } else {
            self.brake.lock().expect("brake lock").engaged = Some(last.id);
            self.metrics.set_brake(true);
            tracing::error!(
                threshold = was,
                "MASS DEACTIVATION BRAKE still engaged from before the restart; run `user-sync brake release` after checking"
            );
        }
        Ok(())
    }
}

fn deactivates(p: &Planned) -> bool {
    match &p.intent {
        Intent::Deactivate(_) => true,
        Intent::Upsert(row) => !row.is_active,
    }
}
