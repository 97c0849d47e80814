//! Binding at the start of every session, without waiting on a frozen node for long.
//!
//! A binding (even one that exists) is a metadata change the whole cluster agrees on: while
//! a node hangs without having been dropped by the others (`net_ticktime`, 60 s by default,
//! so 45-75 s), a bind waits for it, and a session that waited for its bindings was not
//! ready, nor a command done, for about a minute. Yet bindings cannot be looked up, and a
//! session that trusts them to exist consumes a queue replaced by hand unbound (every event
//! lost) or dead-letters to a DLQ declared again without its binding (every dead letter
//! returned, for ever). So every session binds, on a channel of its own, waits for that
//! `BIND_WAIT` at most (on a healthy cluster it takes milliseconds, so events published once
//! the session consumes are routed), and lets a bind held up by a node finish in the
//! background, logging how it ended.

use super::BrokerError;
use super::topology::{Topology, bind};
use lapin::Connection;
use std::time::Duration;

/// How long a session waits for its bindings before going on without them. A bind takes
/// milliseconds on a healthy cluster, so this is room for a loaded one; while a node is
/// frozen it is added to every session's start (and to a failover's pause).
const BIND_WAIT: Duration = Duration::from_secs(1);

/// How long a bind may take in the background before it is given up on, with a warning:
/// past the longest a cluster takes to drop a frozen node (75 s by default).
const BIND_TIMEOUT: Duration = Duration::from_secs(120);

/// Binds the topology (see the module's comment). An error within `BIND_WAIT` is returned
/// (the session then fails, as a failed declare does); later ones are logged.
pub(crate) async fn bind_within(
    conn: &Connection,
    topo: &Topology,
    broker: String,
) -> Result<(), BrokerError> {
    let ch = conn.create_channel().await?;
    let topo = topo.clone();
    let mut binding = tokio::spawn(async move {
        let bound = tokio::time::timeout(BIND_TIMEOUT, bind(&ch, &topo)).await;
        if matches!(bound, Ok(Ok(()))) {
            let _ = ch.close(200, "bound".into()).await;
        }
        bound
    });
    let Ok(joined) = tokio::time::timeout(BIND_WAIT, &mut binding).await else {
        tracing::warn!(
            %broker,
            waited = ?BIND_WAIT,
            "bindings not confirmed yet (a cluster node not answering?); going on while \
             they are made"
        );
        tokio::spawn(async move {
            match binding.await {
                Ok(Ok(Ok(()))) => tracing::info!(%broker, "bindings made"),
                Ok(Ok(Err(error))) => tracing::warn!(
                    %broker,
                    %error,
                    "bindings could not be made; the next session binds again"
                ),
                Ok(Err(_)) => tracing::warn!(
                    %broker,
                    "bindings not made within {BIND_TIMEOUT:?}; the next session binds again"
                ),
                Err(_) => {} // the runtime is shutting down
            }
        });
        return Ok(());
    };
    match joined {
        Ok(Ok(bound)) => bound,
        // Neither the timeout nor a panic can have come within BIND_WAIT; a cancelled task
        // means the runtime is shutting down.
        Ok(Err(_)) | Err(_) => Err(BrokerError::NotConfirmed("bindings".into())),
    }
}
