//! Looking the topology up without changing it: passive declares, which are answered by the
//! node connected to and wait on no other node of a cluster.

use super::BrokerError;
use super::topology::{Part, Topology, parts, protocol_code};
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};

/// The exchanges and queues of the topology that do not exist. Unlike declaring what is
/// missing, or binding, this does not wait on a hung node. Bindings cannot be looked up
/// this way: `Session::prepare` makes them again every session.
pub(crate) async fn missing(conn: &Connection, topo: &Topology) -> Result<Vec<Part>, BrokerError> {
    let mut ch = conn.create_channel().await?;
    let mut missing = Vec::new();
    for part in parts(topo) {
        let name = part.name().into();
        let looked = match &part {
            Part::Exchange(..) => {
                let passive = ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                };
                let kind = ExchangeKind::Topic; // a passive declare does not compare it
                ch.exchange_declare(name, kind, passive, FieldTable::default())
                    .await
            }
            Part::Queue(..) => {
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                };
                ch.queue_declare(name, passive, FieldTable::default())
                    .await
                    .map(drop)
            }
        };
        if !found(looked)? {
            // A miss closes the channel: the next look needs another.
            missing.push(part);
            ch = conn.create_channel().await?;
        }
    }
    let _ = ch.close(200, "looked".into()).await;
    Ok(missing)
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
