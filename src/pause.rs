//! The pause while the database does not answer: probed with capped backoff before
//! consuming, and a batch in hand waits it out (not dead-lettered, not counted as an
//! attempt) until the database answers again or `OUTAGE_KEEPS_SESSION` runs out. Below
//! both the pipeline, which waits out outages, and the worker, which owns the pause.

use crate::backoff::Backoff;
use crate::broker::BrokerError;
use crate::metrics::Metrics;
use crate::store::Store;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a batch in hand waits out an unreachable database before the session ends and
/// its deliveries return to the queue. Far below the broker's 30-minute consumer timeout.
const OUTAGE_KEEPS_SESSION: Duration = Duration::from_secs(20);

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
pub struct Pause {
    metrics: Arc<Metrics>,
    /// Set while the database is unreachable, so the pause is logged once, not per retry.
    paused: Arc<AtomicBool>,
}

impl Pause {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            paused: Arc::new(AtomicBool::new(false)),
        }
    }

    fn paused(&self, error: &sqlx::Error) {
        self.metrics.set_database(false);
        if !self.paused.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "database unavailable, paused");
        }
    }

    fn resumed(&self) {
        self.metrics.set_database(true);
        if self.paused.swap(false, Ordering::Relaxed) {
            tracing::info!("database reachable again; resuming");
        }
    }

    /// Probes the database with capped backoff until it answers; false if shut down first.
    pub async fn wait_for_database(&self, store: &Store, shutdown: &CancellationToken) -> bool {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            match store.probe().await {
                Ok(()) => {
                    self.resumed();
                    return true;
                }
                Err(e) => self.paused(&e),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Runs `attempt` until it succeeds, waiting out an unreachable database; after
    /// `OUTAGE_KEEPS_SESSION` the session ends and the deliveries return to the queue unacked, so nothing is dead-lettered or counted as an attempt because
    /// of an outage. `attempt` returns only outages as errors (see `store::classify`).
    pub(crate) async fn wait_out<T, F, Fut>(
        &self,
        shutdown: &CancellationToken,
        mut attempt: F,
    ) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let started = Instant::now();
        loop {
            match attempt().await {
                Ok(done) => {
                    self.resumed();
                    return Ok(done);
                }
                Err(e) => {
                    self.paused(&e);
                    if started.elapsed() > OUTAGE_KEEPS_SESSION {
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
}
