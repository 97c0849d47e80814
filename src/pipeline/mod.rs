//! One batch's path, as stages over one record per delivery:
//! `decode` (signature, body, plan) -> `hold` (the brake) -> `apply` (one transaction, a
//! failure isolated to its event) -> `settle` (retry, dead-letter and hold publishes,
//! confirmed; logs and metrics) -> one `multiple` ack.

mod decode;
mod isolate;
mod record;
mod settle;

pub use isolate::{Trail, apply_isolated};
pub use record::Decision;

use crate::brake::Brake;
use crate::broker::{BrokerError, Session, Topology};
use crate::decide;
use crate::headers::Route;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::{Commit, EventResult, Store};
use crate::worker::Pause;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use record::{Decision as D, Events, Fate, Record};
use std::sync::Arc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why the pipeline stopped taking work.
#[derive(Debug)]
pub enum Stop {
    Shutdown,
    DatabaseDown,
    Broker(BrokerError),
}

impl From<BrokerError> for Stop {
    fn from(e: BrokerError) -> Self {
        Stop::Broker(e)
    }
}

impl From<lapin::Error> for Stop {
    fn from(e: lapin::Error) -> Self {
        Stop::Broker(e.into())
    }
}

#[derive(Clone)]
pub struct Pipeline {
    settings: Arc<Settings>,
    store: Store,
    membership: Membership,
    topo: Arc<Topology>,
    metrics: Arc<Metrics>,
    brake: Brake,
}

impl Pipeline {
    pub fn new(
        settings: Arc<Settings>,
        store: Store,
        metrics: Arc<Metrics>,
        brake: Brake,
        topo: Arc<Topology>,
    ) -> Self {
        Self {
            membership: Membership::new(&settings.service_name, &settings.all_access_roles),
            topo,
            store,
            settings,
            metrics,
            brake,
        }
    }

    /// Takes a batch through every stage; `pause` holds it while the database is down.
    pub async fn process(
        &self,
        session: &Session,
        batch: Vec<(Delivery, Instant)>,
        pause: &Pause,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        self.brake.poll().await;
        tracing::debug!(deliveries = batch.len(), "batch");
        self.metrics.batch(batch.len());
        let (mut records, events) = self.decode(&batch);
        self.hold_and_apply(&batch, &mut records, &events, pause, shutdown)
            .await?;
        self.settle(session, &batch, records, &events).await?;
        // Ack only now: the changes are committed and every retry, dead letter and held
        // copy confirmed. One `multiple` ack covers the whole batch (tags rise on a channel).
        let (last, _) = batch.last().expect("a batch is never empty");
        if !last.acker.ack(BasicAckOptions { multiple: true }).await? {
            return Err(Stop::Broker(BrokerError::NotConfirmed("ack".into())));
        }
        Ok(())
    }

    /// Reduces the batch per user, parks what the brake holds, applies the rest (held
    /// through an outage by `pause`) and records each event's result.
    async fn hold_and_apply(
        &self,
        batch: &[(Delivery, Instant)],
        records: &mut [Record],
        events: &Events,
        pause: &Pause,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let (users, losers) = decide::reduce(&events.planned);
        let released = self.released(batch, events, pause, shutdown).await?;
        let released = |p: usize| released[p];
        let deactivating = self
            .brake
            .deactivating(&events.planned, &users, &losers, released);
        let granted = pause
            .hold(shutdown, || self.brake.admit(deactivating.len()))
            .await?;
        let split = self
            .brake
            .split(&events.planned, users, losers, &deactivating, granted);
        for &p in &split.held {
            records[events.origin[p]].fate = Fate::Decided(D::Held);
        }
        let trail = (self.settings.audit_retention_days > 0).then(|| Trail {
            service: &self.settings.service_name,
            meta: &events.meta,
        });
        let results = pause
            .hold(shutdown, || {
                let (planned, users, losers) = (&events.planned, &split.users, &split.losers);
                apply_isolated(&self.store, planned, users, losers, Commit::Yes, trail)
            })
            .await?;
        if !split.users.is_empty() {
            let newest = results
                .iter()
                .filter(|(_, r)| matches!(r, EventResult::Done(_)))
                .map(|&(p, _)| events.planned[p].key.timestamp)
                .max();
            self.metrics.committed_batch(newest);
        }
        for (p, result) in results {
            records[events.origin[p]].applied(result);
        }
        Ok(())
    }

    /// Per planned event: whether an operator released it from the hold queue.
    async fn released(
        &self,
        batch: &[(Delivery, Instant)],
        events: &Events,
        pause: &Pause,
        shutdown: &CancellationToken,
    ) -> Result<Vec<bool>, Stop> {
        if !self.brake.is_on() {
            return Ok(vec![false; events.planned.len()]);
        }
        let tokens: Vec<Option<String>> = events
            .origin
            .iter()
            .map(|&i| Route::of(&batch[i].0).release_token())
            .collect();
        pause.hold(shutdown, || self.brake.released(&tokens)).await
    }
}
