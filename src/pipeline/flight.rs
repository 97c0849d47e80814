//! The batches in flight: up to `PIPELINE_DEPTH` go through their stages at once, each on a
//! connection of its own, and are acknowledged strictly in delivery order.
//!
//! Why the order: one `multiple` ack covers every delivery up to its tag on the channel,
//! batches before it included. A batch is acknowledged only once it has committed and
//! settled (retries, dead letters and held copies confirmed) and every batch before it has
//! been acknowledged. When a batch fails (an outage longer than the session waits, the
//! broker gone, shutdown while waiting one out), nothing after it is acknowledged: the caller ends the
//! session, and the later batches' deliveries return to the queue with the failed one's,
//! even those already committed (applying them again is stale, so harmless).

use super::Pipeline;
use super::gate::{Gate, Line};
use crate::broker::{BrokerError, Session};
use crate::pause::{Pause, Stop};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type Settling<'a> = Pin<Box<dyn Future<Output = Result<Acker, Stop>> + Send + 'a>>;

pub(crate) struct Flight<'a> {
    pipeline: &'a Pipeline,
    session: &'a Session,
    pause: &'a Pause,
    shutdown: &'a CancellationToken,
    depth: usize,
    line: Line,
    /// Polled together; yield their results in the order they were launched.
    batches: FuturesOrdered<Settling<'a>>,
}

impl<'a> Flight<'a> {
    pub fn new(
        pipeline: &'a Pipeline,
        session: &'a Session,
        pause: &'a Pause,
        shutdown: &'a CancellationToken,
        depth: usize,
    ) -> Self {
        Self {
            pipeline,
            session,
            pause,
            shutdown,
            depth,
            line: Line::default(),
            batches: FuturesOrdered::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub fn has_room(&self) -> bool {
        self.batches.len() < self.depth
    }

    /// Starts a batch; it makes progress whenever `next` is polled.
    pub fn launch(&mut self, batch: Vec<(Delivery, Instant)>) {
        let gate: Gate = self.line.next();
        let (pipeline, session, pause, shutdown) =
            (self.pipeline, self.session, self.pause, self.shutdown);
        self.batches.push_back(Box::pin(
            pipeline.process(session, batch, gate, pause, shutdown),
        ));
    }

    /// Drives every batch in flight until the oldest has settled, then acknowledges it.
    /// Pending for ever when nothing is in flight (check `is_empty` first).
    ///
    /// Cancel-safe until the oldest has settled (a `select!` may drop it while waiting);
    /// the acknowledgement itself is not raced: `ack` is awaited in the caller's arm.
    pub async fn next(&mut self) -> Result<Acker, Stop> {
        match self.batches.next().await {
            Some(settled) => settled,
            None => std::future::pending().await,
        }
    }
}

/// How long an acknowledgement may take to be handed to the connection. lapin resolves
/// it once the frame is on its way; when the connection fails at that moment the promise
/// is never resolved, and the consume loop, which awaits the ack outside its race, stood
/// still for good: deaf to shutdown and to the lost connection (the watchdog only made
/// `/healthz` fail a minute later). The ack is a local write, so a few seconds is ample.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Acknowledges a settled batch and, with `multiple`, every delivery before it. Past
/// `ACK_TIMEOUT` the session is treated as lost: whether or not the ack reached the
/// broker, its deliveries are either acknowledged or come back (applying them again is
/// stale, so harmless).
pub(crate) async fn ack(acker: Acker) -> Result<(), Stop> {
    let acked = tokio::time::timeout(ACK_TIMEOUT, acker.ack(BasicAckOptions { multiple: true }))
        .await
        .map_err(|_| Stop::Broker(BrokerError::NotConfirmed("ack (timed out)".into())))?;
    if !acked? {
        // Used or poisoned: the channel closed under us; its deliveries return by themselves.
        return Err(Stop::Broker(BrokerError::NotConfirmed("ack".into())));
    }
    Ok(())
}
