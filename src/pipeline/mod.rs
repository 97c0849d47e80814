//! One batch's path, as stages over one record per delivery:
//! `decode` (signature, body, plan) -> `brake` (park mass deactivations, in delivery order:
//! `gate`) -> `apply` (in turn with the batches ahead: `turns`; a failure isolated to its
//! event: `isolate`) -> `settle` (retry, dead-letter and hold publishes, confirmed; logs
//! and metrics) -> one `multiple` ack, sent by `flight` once every batch before it is
//! acknowledged.

mod decode;
mod flight;
mod gate;
mod isolate;
mod record;
mod settle;
mod turns;

pub(crate) use flight::{Flight, ack};
pub use isolate::{Trail, isolate_failures};
pub use record::Decision;

use crate::brake::Brake;
use crate::broker::{Session, Topology};
use crate::decide;
use crate::headers::Route;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::pause::{Pause, Stop};
use crate::settings::Settings;
use crate::store::{EventResult, Store};
use gate::Gate;
use lapin::Acker;
use lapin::message::Delivery;
use record::{Decision as D, Events, Fate, Record};
use std::sync::Arc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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

    /// Takes a batch through every stage but the acknowledgement (see `Flight`); `pause`
    /// waits out a database outage. Returns the acker of its last delivery.
    async fn process(
        &self,
        session: &Session,
        mut batch: Vec<(Delivery, Instant)>,
        mut gate: Gate,
        pause: &Pause,
        shutdown: &CancellationToken,
    ) -> Result<Acker, Stop> {
        self.brake.poll().await;
        tracing::debug!(deliveries = batch.len(), "batch");
        self.metrics.batch(batch.len());
        let (mut records, events) = self.decode(&batch);
        self.brake_and_apply(&batch, &mut records, &events, &mut gate, pause, shutdown)
            .await?;
        self.settle(session, &batch, records, &events).await?;
        let (last, _) = batch.pop().expect("a batch is never empty");
        Ok(last.acker)
    }

    /// Reduces the batch per user, parks what the brake holds, applies the rest (waiting
    /// out an outage with `pause`) and records each event's result.
    async fn brake_and_apply(
        &self,
        batch: &[(Delivery, Instant)],
        records: &mut [Record],
        events: &Events,
        gate: &mut Gate,
        pause: &Pause,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let (users, losers) = decide::reduce(&events.planned);
        gate.wait().await;
        let released = self.released(batch, events, pause, shutdown).await?;
        let released = |p: usize| released[p];
        let deactivating = self
            .brake
            .deactivating(&events.planned, &users, &losers, released);
        let granted = pause
            .wait_out(shutdown, || self.brake.admit(deactivating.len()))
            .await?;
        let split = self
            .brake
            .split(&events.planned, users, losers, &deactivating, granted);
        let applying = split.users.iter();
        gate.pass(applying.map(|u| events.planned[u.newest].user_id).collect());
        for &p in &split.held {
            records[events.origin[p]].fate = Fate::Decided(D::Held);
        }
        let any = !split.users.is_empty();
        let results = self
            .take_turns(events, split.users, split.losers, gate, pause, shutdown)
            .await?;
        if any {
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
        pause
            .wait_out(shutdown, || self.brake.released(&tokens))
            .await
    }
}
