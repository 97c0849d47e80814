//! The mass-deactivation brake: a sliding window over recent deactivations. When a batch
//! would take the window past `DEACTIVATION_BRAKE`, the deactivations beyond it are parked
//! in `{queue}.hold` and every further one is parked too, until an operator runs
//! `user-sync brake release` (or restarts with a higher threshold). A bug upstream that
//! deletes every user then costs a page, not a school's worth of lockouts.
//!
//! The window lives in the database (`brake_window`) and counts the deactivations every
//! replica on the queue was admitted to apply, so the threshold means the same with one
//! replica or ten. `brake_log` carries engagements and releases between replicas and
//! across restarts.

mod split;
mod state;

use state::{Engaged, State};

use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::Store;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The brake of one worker, shared by its tasks.
#[derive(Clone)]
pub struct Brake {
    limit: u32,
    span: Duration,
    hold_queue: String,
    store: Store,
    metrics: Arc<Metrics>,
    state: Arc<Mutex<State>>,
}

impl Brake {
    pub fn new(settings: &Settings, store: Store, metrics: Arc<Metrics>, hold_queue: &str) -> Self {
        let (limit, span) = (
            settings.deactivation_brake,
            settings.deactivation_brake_window,
        );
        Self {
            limit,
            span,
            hold_queue: hold_queue.to_string(),
            store,
            metrics,
            state: Arc::new(Mutex::new(State::new())),
        }
    }

    pub(crate) fn is_on(&self) -> bool {
        self.limit > 0
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("brake lock")
    }

    /// Which of `tokens` (one per delivery, from `x-brake-release` on our own copies) name a
    /// release recorded in the brake log. The log, not the header alone, decides, so a
    /// producer cannot wave deactivations past the brake; and it is shared, so every replica
    /// admits what one release moved back. Each token is looked up once.
    pub(crate) async fn released(
        &self,
        tokens: &[Option<String>],
    ) -> Result<Vec<bool>, sqlx::Error> {
        let mut unknown: Vec<String> = {
            let state = self.state();
            let new = |t: &&String| !state.releases.contains(*t);
            tokens.iter().flatten().filter(new).cloned().collect()
        };
        if !unknown.is_empty() {
            unknown.sort();
            unknown.dedup();
            let recorded = self.store.brake_release_tokens(&unknown).await?;
            self.state().releases.extend(recorded);
        }
        let state = self.state();
        Ok(tokens
            .iter()
            .map(|t| t.as_ref().is_some_and(|t| state.releases.contains(t)))
            .collect())
    }

    /// How many of `want` deactivating users may go ahead: none while engaged, otherwise
    /// what the shared window grants (and records) for this batch. A granted user whose
    /// events then change nothing still counts: the window errs on the side of holding.
    pub(crate) async fn admit(&self, want: usize) -> Result<usize, sqlx::Error> {
        if !self.is_on() || want == 0 || self.state().engaged != Engaged::No {
            return Ok(0);
        }
        self.store.brake_admit(self.limit, self.span, want).await
    }

    /// Marks the brake engaged, then writes the log entry in the background (the decision
    /// must not wait on the database); the entry lets `brake release` reach every replica.
    fn engage(&self, held: usize) {
        let (limit, window) = (self.limit, self.span.as_secs());
        tracing::error!(
            threshold = limit,
            window_s = window,
            held,
            queue = %self.hold_queue,
            "MASS DEACTIVATION BRAKE ENGAGED: more than {limit} deactivations within {window} s; \
             deactivations are parked until `user-sync brake release`"
        );
        self.metrics.set_brake(true);
        self.state().engaged = Engaged::Yes { logged: None };
        let brake = self.clone();
        let detail = format!("more than {limit} deactivations within {window} s");
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
            loop {
                match brake.store.brake_engaged(limit, &detail).await {
                    Ok(id) => {
                        let mut state = brake.state();
                        if state.engaged != Engaged::No {
                            state.engaged = Engaged::Yes { logged: Some(id) };
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

    /// While engaged, asks the brake log whether an operator released it (called before
    /// each batch and once a second while idle).
    pub(crate) async fn poll(&self) {
        let Engaged::Yes { logged: Some(id) } = self.state().engaged else {
            return;
        };
        if let Ok(Some(last)) = self.store.brake_last().await
            && !last.engaged
            && last.id > id
        {
            self.state().engaged = Engaged::No;
            self.metrics.set_brake(false);
            tracing::warn!("deactivation brake released by an operator; deactivations flow again");
        }
    }

    /// At start: a brake engaged before a restart stays engaged, unless the threshold was
    /// raised above the one it engaged at (or the brake turned off).
    pub async fn restore(&self) -> Result<(), sqlx::Error> {
        let Some(last) = self.store.brake_last().await? else {
            return Ok(());
        };
        if !last.engaged {
            return Ok(());
        }
        let was = last.threshold.unwrap_or(0);
        if self.limit == 0 || i64::from(self.limit) > was {
            let why = format!(
                "restarted with DEACTIVATION_BRAKE raised from {was} to {}",
                self.limit
            );
            self.store.brake_released(&why, None).await?;
            tracing::warn!(
                hold = %self.hold_queue,
                "{why}: brake released; deactivations parked before stay in the hold queue until `user-sync brake release`"
            );
        } else {
            self.state().engaged = Engaged::Yes {
                logged: Some(last.id),
            };
            self.metrics.set_brake(true);
            tracing::error!(
                threshold = was,
                "MASS DEACTIVATION BRAKE still engaged from before the restart; run `user-sync brake release` after checking"
            );
        }
        Ok(())
    }
}
