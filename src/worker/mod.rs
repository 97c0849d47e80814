//! The consume loop: supervise the broker session, cut batches, hand them to the pipeline.

mod pause;

pub use pause::Pause;

use crate::backoff::Backoff;
use crate::brake::Brake;
use crate::broker::{BrokerError, Session, Topology};
use crate::health::Watchdog;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Stop};
use crate::settings::Settings;
use crate::store::Store;
use futures_util::{FutureExt, StreamExt};
use lapin::Consumer;
use lapin::message::Delivery;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the connection status is checked while no delivery arrives. Heartbeats catch
/// a dead peer; this catches a connection lapin has marked closed without ending the stream.
const WATCHDOG: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("broker connection lost")]
    ConnectionLost,
    #[error("consumer cancelled by the broker")]
    ConsumerCancelled,
    #[error("database unavailable; in-hand deliveries handed back to the queue")]
    DatabaseDown,
}

impl From<lapin::Error> for SessionEnd {
    fn from(e: lapin::Error) -> Self {
        SessionEnd::Broker(e.into())
    }
}

/// The supervisor: owns the broker session, the database pause and the brake's polling,
/// and hands each batch to the pipeline.
pub struct Worker {
    /// The queue and its satellites, named once for the pipeline and the brake too.
    pub topo: Arc<Topology>,
    pub settings: Arc<Settings>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub brake: Brake,
    pub pipeline: Pipeline,
    pub pause: Pause,
    /// Ticked at every iteration and, while waiting, every second (see `health`).
    pub watchdog: Arc<Watchdog>,
}

impl Worker {
    /// Runs until `shutdown` fires: connect, consume, and on any loss reconnect with capped
    /// backoff, making sure of the topology (`Session::prepare`) and re-registering the
    /// consumer each time.
    ///
    /// A supervised loop rather than lapin's `enable_auto_recover()`: recovery there is
    /// young and was seen here to stay "reconnecting" forever after a second fault in quick
    /// succession (docs/facts.md#auto-recover-can-stall-silently, lapin#312). A fresh
    /// connection per session is simple to reason about, and unacked deliveries of a lost
    /// session return to the queue by themselves.
    pub async fn run(&self, shutdown: CancellationToken) {
        let topo = &self.topo;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let dog = &self.watchdog;
        // Where the next session's connect starts in RABBITMQ_ADDRESSES: after the node the
        // last session used (see `broker::connect_from`).
        let mut next = 0;
        // Sessions look the topology up, declare what is missing and bind in the background
        // (`Session::prepare`); after a copy of ours came back unroutable, the next one
        // declares in full and waits for its bindings, until one succeeds.
        let mut full = false;
        loop {
            dog.tick();
            // Do not take deliveries we cannot apply: wait for the database first.
            let waited = self.pause.wait_for_database(&self.store, &shutdown);
            if !dog.waiting(waited).await {
                return;
            }
            let open = async {
                let session = Session::connect_from(&self.settings, next).await?;
                next = session.index + 1;
                session.prepare(topo, full).await?;
                full = false;
                Ok::<_, BrokerError>(session)
            };
            let opened = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = dog.waiting(open) => s,
            };
            let (end, broker) = match opened {
                Ok(session) => {
                    let started = Instant::now();
                    let end = self.consume(&session, topo, &shutdown).await;
                    dog.waiting(session.close()).await;
                    full |= session.returned();
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff.reset();
                    }
                    (end, Some(session.address.to_string()))
                }
                Err(e) => (Err(e.into()), None),
            };
            match end {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, broker, "broker session ended; reconnecting");
                    self.metrics.broker_reconnect();
                }
            }
            // The backoff reaches 30 s: the sleep ticks too, or a long outage would look
            // like a wedged worker.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = dog.waiting(tokio::time::sleep(backoff.next_delay())) => {}
            }
        }
    }

    /// Consumes one session. Returns `Ok` only when `shutdown` fired; the batch in hand is
    /// finished and acknowledged first, the rest of the prefetch window returns to the
    /// queue when the channel closes.
    async fn consume(
        &self,
        session: &Session,
        topo: &Topology,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionEnd> {
        let prefetch = self.settings.prefetch;
        let consumer = session.consumer(&topo.queue, prefetch);
        let mut consumer = self.watchdog.waiting(consumer).await?;
        let broker = session.address.to_string();
        tracing::info!(queue = %topo.queue, prefetch, %broker, "consuming");
        self.metrics.set_broker_connected(Some(broker));
        let end = self.consume_batches(session, &mut consumer, shutdown).await;
        self.metrics.set_broker_connected(None);
        end
    }

    async fn consume_batches(
        &self,
        session: &Session,
        consumer: &mut Consumer,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionEnd> {
        let dog = &self.watchdog;
        // Idle, this interval ticks the liveness watchdog once a second.
        let mut watchdog = tokio::time::interval(WATCHDOG);
        loop {
            dog.tick();
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                next = consumer.next() => next,
                _ = watchdog.tick() => {
                    if !session.connection.status().connected() {
                        return Err(SessionEnd::ConnectionLost);
                    }
                    dog.waiting(self.brake.poll()).await;
                    continue;
                }
            };
            let first = match first {
                Some(delivery) => (delivery?, Instant::now()),
                None => return Err(SessionEnd::ConsumerCancelled),
            };
            let (size, wait) = (self.settings.batch_size, self.settings.batch_max_wait);
            let batch = collect(first, consumer, size, wait)?;
            // A batch waits on the database (held up to 20 s through an outage) and on the
            // broker's confirms: waits on dependencies, which readiness reports; liveness
            // only asks that this task is still polled.
            let processed = self.pipeline.process(session, batch, &self.pause, shutdown);
            match dog.waiting(processed).await {
                Ok(()) => {}
                Err(Stop::Shutdown) => return Ok(()),
                Err(Stop::DatabaseDown) => return Err(SessionEnd::DatabaseDown),
                Err(Stop::Broker(e)) => return Err(e.into()),
            }
        }
    }
}

/// Cuts a batch: up to `size` deliveries, and no more than `max_wait` spent collecting.
/// Stops as soon as no further delivery is ready, so light traffic waits for nothing.
/// Each delivery keeps the instant it was taken, for the delivery-to-commit latency.
fn collect(
    first: (Delivery, Instant),
    consumer: &mut Consumer,
    size: usize,
    max_wait: Duration,
) -> Result<Vec<(Delivery, Instant)>, SessionEnd> {
    let deadline = first.1 + max_wait;
    let mut batch = vec![first];
    while batch.len() < size && Instant::now() < deadline {
        match consumer.next().now_or_never() {
            Some(Some(delivery)) => batch.push((delivery?, Instant::now())),
            Some(None) | None => break,
        }
    }
    Ok(batch)
}
