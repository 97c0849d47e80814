//! Looking the topology up without changing it: passive declares, which are answered by the
//! node connected to and wait on no other node of a cluster.

use super::BrokerError;
use super::topology::{Topology, protocol_code};
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};

/// Whether every exchange and queue of the topology exists. Unlike the bindings of
/// `declare`, this does not wait on a hung node. The first one missing closes the channel
/// and the answer is no.
pub(crate) async fn exists(conn: &Connection, topo: &Topology) -> Result<bool, BrokerError> {
    let ch = conn.create_channel().await?;
    for name in [&topo.exchange, &topo.dlx] {
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let kind = ExchangeKind::Topic; // a passive declare does not compare it
        let looked =
            ch.exchange_declare(name.as_str().into(), kind, passive, FieldTable::default());
        if !found(looked.await)? {
            return Ok(false);
        }
    }
    let retries = topo.retry_queues.iter().map(|(q, _)| q);
    for name in [&topo.queue, &topo.dlq, &topo.hold]
        .into_iter()
        .chain(retries)
    {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let looked = ch.queue_declare(name.as_str().into(), passive, FieldTable::default());
        if !found(looked.await.map(drop))? {
            return Ok(false);
        }
    }
    let _ = ch.close(200, "looked".into()).await;
    Ok(true)
}

/// A passive declare's answer: there, missing (404), or the error that ended the session.
fn found(looked: Result<(), lapin::Error>) -> Result<bool, BrokerError> {
    match looked {
        Ok(()) => Ok(true),
        Err(e) if protocol_code(&e) == Some(404) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// (messages ready, consumers) of a queue by passive declare, without creating it; `None`
/// if it does not exist. A passive declare of a missing queue closes its channel, so each
/// look gets a channel of its own.
pub async fn queue_counts(
    conn: &Connection,
    name: &str,
) -> Result<Option<(u32, u32)>, BrokerError> {
    let ch = conn.create_channel().await?;
    let opts = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match ch
        .queue_declare(name.into(), opts, FieldTable::default())
        .await
    {
        Ok(q) => {
            let _ = ch.close(200, "looked".into()).await;
            Ok(Some((q.message_count(), q.consumer_count())))
        }
        Err(_) => Ok(None),
    }
}
