//! `user-sync brake`: see whether the mass-deactivation brake holds, and release it.

use super::dlq::move_back;
use crate::broker::{self, BrokerError, Session, Topology};
use crate::settings::Settings;
use crate::store::Store;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum BrakeError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

#[derive(Debug, Serialize)]
pub struct BrakeStatus {
    pub engaged: bool,
    pub threshold: u32,
    pub window_s: u64,
    /// Deactivations parked in the hold queue.
    pub held: u32,
}

pub async fn status(settings: &Settings) -> Result<BrakeStatus, BrakeError> {
    let store = Store::new(settings)?;
    store.migrate().await?;
    let last = store.brake_last().await?;
    store.pool().close().await;
    let topo = Topology::new(settings);
    let conn = broker::connect(settings).await?;
    let held = broker::queue_counts(&conn, &topo.hold)
        .await?
        .map_or(0, |(ready, _)| ready);
    let _ = conn.close(200, "status".into()).await;
    Ok(BrakeStatus {
        engaged: last.is_some_and(|l| l.engaged),
        threshold: settings.deactivation_brake,
        window_s: settings.deactivation_brake_window.as_secs(),
        held,
    })
}

#[derive(Debug, Serialize)]
pub struct Released {
    pub was_engaged: bool,
    /// Held deactivations moved back to the main queue, to be applied now.
    pub moved: usize,
}

/// Releases the brake for every replica (through the brake log), then moves the held
/// deactivations back to the main queue. The log entry comes first, so that a worker
/// never parks a moved message again.
pub async fn release(settings: &Settings) -> Result<Released, BrakeError> {
    let store = Store::new(settings)?;
    store.migrate().await?;
    let was_engaged = store.brake_last().await?.is_some_and(|l| l.engaged);
    if was_engaged {
        store.brake_released("released by an operator").await?;
    }
    store.pool().close().await;
    // A worker reads the log before each batch, so it sees the release before any moved
    // message reaches it.
    let topo = Topology::new(settings);
    let session = Session::open(settings, &topo).await?;
    let moved = move_back(&session, &topo, &topo.hold, None, None).await;
    session.close().await;
    Ok(Released {
        was_engaged,
        moved: moved?.replayed,
    })
}
