//! `user-sync brake`: see whether the mass-deactivation brake holds, and release it.

use super::dlq::{Moving, move_back};
use crate::broker::{self, BrokerError, Session, Topology};
use crate::settings::Settings;
use crate::store::{SetupError, Store};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum BrakeError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// Another service's schema, or a role without the rights: nothing was done.
    #[error("{0}")]
    Config(String),
}

impl From<SetupError> for BrakeError {
    fn from(e: SetupError) -> Self {
        match e {
            SetupError::Outage(e) | SetupError::Mismatch(e) => BrakeError::Database(e),
            config => BrakeError::Config(config.to_string()),
        }
    }
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
    store.migrate_and_claim().await?;
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
    /// What the hold queue gained while settling (see `dlq::Replayed::came_back`): no moved
    /// deactivation is parked again, so only new ones beyond the threshold count here.
    pub came_back: Option<u32>,
}

/// Releases the brake for every replica and moves the deactivations held when it starts
/// back to the main queue, each stamped with a token recorded in the brake log. A worker
/// admits a stamped deactivation past the brake, and does not count it in its window, only
/// when the log holds the token: the operator approved exactly these. Without that, a
/// release of more deactivations than the threshold would see the surplus parked again,
/// and move it back and forth for ever. The log entry comes first, so every replica knows
/// the token before any stamped copy reaches it.
pub async fn release(settings: &Settings) -> Result<Released, BrakeError> {
    let store = Store::new(settings)?;
    store.migrate_and_claim().await?;
    let was_engaged = store.brake_last().await?.is_some_and(|l| l.engaged);
    let token = uuid::Uuid::new_v4().to_string();
    let detail = if was_engaged {
        "released by an operator"
    } else {
        "held deactivations released by an operator; the brake was not engaged"
    };
    store.brake_released(detail, Some(&token)).await?;
    store.pool().close().await;
    let topo = Topology::new(settings);
    let session = Session::open(settings, &topo).await?;
    let moving = Moving {
        from: &topo.hold,
        kind: None,
        limit: None,
        stamp: Some(&token),
    };
    let moved = move_back(&session, &topo, &moving).await;
    session.close().await;
    let moved = moved?;
    Ok(Released {
        was_engaged,
        moved: moved.replayed,
        came_back: moved.came_back,
    })
}
