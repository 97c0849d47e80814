//! The mass-deactivation brake's part of a batch (see `crate::brake`): hold what would
//! cross the threshold, engage and release, restore after a restart.

use super::Pipeline;
use crate::backoff::Backoff;
use crate::decide::{Intent, Outcome, Planned, UserBatch};
use crate::store::EventResult;
use std::time::Duration;

impl Pipeline {
    /// Takes out of the batch the deactivations the brake holds (`hold` is called with each
    /// of their event indices) and engages the brake if it was not. Nothing is held unless
    /// a deactivation would take the window past `DEACTIVATION_BRAKE`.
    pub(super) fn brake_split(
        &self,
        planned: &[Planned],
        users: Vec<UserBatch>,
        mut hold: impl FnMut(usize),
    ) -> Vec<UserBatch> {
        if self.settings.deactivation_brake == 0 {
            return users;
        }
        let deactivating: Vec<usize> = (0..users.len())
            .filter(|&u| match &planned[users[u].newest].intent {
                Intent::Deactivate(_) => true,
                Intent::Upsert(row) => !row.is_active,
            })
            .collect();
        if deactivating.is_empty() {
            return users;
        }
        let (held, was_engaged) = {
            let mut brake = self.brake.lock().expect("brake lock");
            let (_, held) = brake.admit(std::time::Instant::now(), &deactivating);
            (held, brake.engaged.is_some())
        };
        if held.is_empty() {
            return users;
        }
        if !was_engaged {
            self.engage_brake(held.len());
        }
        let mut kept = Vec::with_capacity(users.len() - held.len());
        for (u, user) in users.into_iter().enumerate() {
            if held.binary_search(&u).is_ok() {
                hold(user.newest);
                if let Some(up) = user.upsert.filter(|up| *up != user.newest) {
                    hold(up);
                }
            } else {
                kept.push(user);
            }
        }
        kept
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

    pub(super) fn brake_record(&self, results: &[(usize, EventResult)]) {
        if self.settings.deactivation_brake == 0 {
            return;
        }
        let n = results
            .iter()
            .filter(|(_, r)| *r == EventResult::Done(Outcome::Deactivated))
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
            self.store.brake_released(&why).await?;
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
