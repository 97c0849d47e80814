//! The consume loop: supervise the broker session, cut batches, hand them to the pipeline.

mod cut;
mod feed;
mod window;

use crate::backoff::Backoff;
use crate::brake::Brake;
use crate::broker::{BrokerError, Session, Topology};
use crate::health::Watchdog;
use crate::metrics::Metrics;
use crate::pause::{Pause, Stop};
use crate::pipeline::{self, Flight, Pipeline};
use crate::settings::Settings;
use crate::store::Store;
use cut::{Cut, TOP_UP};
use feed::Feed;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use window::Window;

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
    ///
    /// Returns an error only when the broker refuses the first connection (a certificate
    /// or the login, see `BrokerError::is_refusal`): a configuration problem to exit on,
    /// not an outage to wait out. Refused later (a certificate expired, a user removed), it
    /// logs an error and keeps trying: a renewed certificate is read at the next attempt.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), BrokerError> {
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
        let mut connected = false;
        loop {
            dog.tick();
            // Do not take deliveries we cannot apply: wait for the database first.
            let waited = self.pause.wait_for_database(&self.store, &shutdown);
            if !dog.waiting(waited).await {
                return Ok(());
            }
            let open = async {
                let session = Session::connect_from(&self.settings, next).await?;
                next = session.index + 1;
                session.prepare(topo, full).await?;
                full = false;
                Ok::<_, BrokerError>(session)
            };
            let opened = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                s = dog.waiting(open) => s,
            };
            let (end, broker) = match opened {
                Ok(session) => {
                    connected = true;
                    let started = Instant::now();
                    let end = self.consume(&session, topo, &shutdown).await;
                    dog.waiting(session.close()).await;
                    full |= session.returned();
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff.reset();
                    }
                    (end, Some(session.address.to_string()))
                }
                Err(e) if e.is_refusal() && !connected => return Err(e),
                Err(e) => (Err(e.into()), None),
            };
            match end {
                Ok(()) => return Ok(()),
                Err(SessionEnd::Broker(e)) if e.is_refusal() => {
                    tracing::error!(error = %e, "broker refused the connection; retrying");
                    self.metrics.broker_reconnect();
                }
                Err(e) => {
                    tracing::warn!(error = %e, broker, "broker session ended; reconnecting");
                    self.metrics.broker_reconnect();
                }
            }
            // The backoff reaches 30 s: the sleep ticks too, or a long outage would look
            // like a wedged worker.
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
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
        let s = &self.settings;
        let window = Window::new(s.max_held_bytes, s.max_body_bytes, s.prefetch);
        let feed = Feed::open(session, &topo.queue, window);
        let mut feed = self.watchdog.waiting(feed).await?;
        let (broker, prefetch) = (session.address.to_string(), feed.window());
        tracing::info!(queue = %topo.queue, prefetch, %broker, "consuming");
        self.metrics.set_broker_connected(Some(broker));
        let end = self.consume_batches(session, &mut feed, shutdown).await;
        self.metrics.set_broker_connected(None);
        end
    }

    /// Cuts batches and keeps up to `PIPELINE_DEPTH` of them in flight, acknowledged in
    /// delivery order (see `pipeline::Flight`). Shutdown, or the consumer's end, stops the
    /// cutting; the batches in flight are finished and acknowledged before it returns. A
    /// failed batch returns at once: nothing after it may be acknowledged.
    async fn consume_batches(
        &self,
        session: &Session,
        feed: &mut Feed<'_>,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionEnd> {
        let dog = &self.watchdog;
        // Idle, this interval ticks the liveness watchdog once a second.
        let mut watchdog = tokio::time::interval(WATCHDOG);
        // Behind a batch in flight, the next one is topped up on this tick rather than woken
        // by each delivery: the broker sends a backlog one delivery at a time, and a turn of
        // this loop per delivery cost the consumer markedly more CPU in the drain benchmark.
        let mut top_up = tokio::time::interval(TOP_UP);
        top_up.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let settings = &self.settings;
        let mut cut = Cut::new(settings.batch_size, settings.batch_max_wait);
        let depth = settings.pipeline_depth;
        let mut flight = Flight::new(&self.pipeline, session, &self.pause, shutdown, depth);
        let mut ending: Option<Result<(), SessionEnd>> = None;
        loop {
            dog.tick();
            dog.waiting(feed.adjust()).await?;
            if ending.is_none() && flight.has_room() && cut.due(flight.is_empty()) {
                flight.launch(cut.take());
                continue;
            }
            if flight.is_empty()
                && let Some(end) = ending.take()
            {
                return end;
            }
            let open = ending.is_none() && flight.has_room() && !cut.is_full();
            let filling = open && !cut.is_empty() && !flight.is_empty();
            let more = tokio::select! {
                biased;
                _ = shutdown.cancelled(), if ending.is_none() => {
                    ending = Some(Ok(()));
                    true
                }
                settled = flight.next(), if !flight.is_empty() => {
                    // Awaited here, not in the race: a dropped ack would leave its batch
                    // unacknowledged until a later one covers it.
                    let acked = match settled {
                        Ok(acker) => pipeline::ack(acker).await,
                        Err(stop) => Err(stop),
                    };
                    match acked {
                        Ok(()) if open => cut.top_up(feed)?,
                        Ok(()) => true,
                        Err(Stop::Shutdown) => return Ok(()),
                        Err(Stop::DatabaseDown) => return Err(SessionEnd::DatabaseDown),
                        Err(Stop::Broker(e)) => return Err(e.into()),
                    }
                }
                next = feed.next(), if open && !filling => match next {
                    Some(delivery) => cut.fill(delivery?, feed)?,
                    None => feed.changing(),
                },
                _ = top_up.tick(), if filling => cut.top_up(feed)?,
                _ = watchdog.tick() => {
                    if !session.connection.status().connected() {
                        return Err(SessionEnd::ConnectionLost);
                    }
                    if flight.is_empty() && cut.is_empty() {
                        dog.waiting(self.brake.poll()).await;
                    }
                    true
                }
            };
            if !more && ending.is_none() {
                ending = Some(Err(SessionEnd::ConsumerCancelled));
            }
        }
    }
}
