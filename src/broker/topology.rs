//! The broker topology (docs/contract.md#broker-topology): its parts, declared idempotently
//! where a look-up finds them missing, and its bindings.

use super::BrokerError;
use crate::settings::{QueueType, Settings};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};
use std::time::Duration;

pub const ROUTING_KEYS: [&str; 3] = ["user.created", "user.updated", "user.deleted"];

/// Names derived from the settings: the main queue and its satellites.
#[derive(Debug, Clone)]
pub struct Topology {
    pub exchange: String,
    pub queue: String,
    pub queue_type: QueueType,
    pub dlq: String,
    /// Fanout exchange in front of the DLQ, so a dead letter keeps its routing key.
    pub dlx: String,
    /// Where the mass-deactivation brake parks deactivations until an operator releases
    /// them; nothing consumes it.
    pub hold: String,
    /// One retry queue per delay tier: per-message TTL only expires at the head of a queue,
    /// so mixing delays in one queue would hold short ones behind long ones.
    pub retry_queues: Vec<(String, Duration)>,
}

impl Topology {
    pub fn new(s: &Settings) -> Self {
        let queue = s.rabbitmq_queue.clone();
        Self {
            exchange: s.rabbitmq_exchange.clone(),
            queue_type: s.rabbitmq_queue_type,
            dlq: format!("{queue}.dlq"),
            dlx: format!("{queue}.dlx"),
            hold: format!("{queue}.hold"),
            retry_queues: s
                .retry_delays
                .iter()
                .map(|d| (format!("{queue}.retry.{}ms", d.as_millis()), *d))
                .collect(),
            queue,
        }
    }
}

/// One exchange or queue of the topology, with what it is declared with.
pub(crate) enum Part {
    Exchange(String, ExchangeKind),
    Queue(String, FieldTable),
}

impl Part {
    pub(crate) fn name(&self) -> &str {
        match self {
            Part::Exchange(name, _) | Part::Queue(name, _) => name,
        }
    }
}

/// Every exchange and queue, in the order they are declared.
pub(crate) fn parts(topo: &Topology) -> Vec<Part> {
    // The auth system's exchange (declaring it too lets us start before the publisher),
    // and the fanout in front of our DLQ.
    let mut parts = vec![
        Part::Exchange(topo.exchange.clone(), ExchangeKind::Topic),
        Part::Exchange(topo.dlx.clone(), ExchangeKind::Fanout),
    ];
    for name in [&topo.dlq, &topo.hold] {
        let mut args = FieldTable::default();
        queue_type_arg(&mut args, topo.queue_type);
        parts.push(Part::Queue(name.clone(), args));
    }
    let mut main_args = FieldTable::default();
    queue_type_arg(&mut main_args, topo.queue_type);
    // Safety net: anything the broker itself dead-letters (a quorum delivery limit, a
    // reject without requeue) lands in our DLQ instead of being dropped.
    main_args.insert("x-dead-letter-exchange".into(), long_string(&topo.dlx));
    parts.push(Part::Queue(topo.queue.clone(), main_args));
    for (name, delay) in &topo.retry_queues {
        let mut args = FieldTable::default();
        // The tier's delay: a message waits here this long, then expires...
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(delay.as_millis() as i64),
        );
        // ...and is dead-lettered through the default exchange straight to our own queue,
        // never through the auth exchange, which would redeliver it to every service.
        args.insert("x-dead-letter-exchange".into(), long_string(""));
        args.insert("x-dead-letter-routing-key".into(), long_string(&topo.queue));
        retry_queue_type(&mut args, topo.queue_type);
        parts.push(Part::Queue(name.clone(), args));
    }
    parts
}

/// Declares everything idempotently and binds, waiting for the bindings: the benchmarks'
/// set-up, and a session after one of ours came back unroutable (`Session::prepare`).
/// Sessions otherwise look up first (`lookup::missing`) and bind in the background.
pub async fn declare(conn: &Connection, topo: &Topology) -> Result<(), BrokerError> {
    declare_parts(conn, parts(topo)).await?;
    let ch = conn.create_channel().await?;
    bind(&ch, topo).await?;
    let _ = ch.close(200, "declared".into()).await;
    Ok(())
}

/// Declares `parts`, durable. Each declare of something that does not exist yet is a
/// change the whole cluster agrees on, so it waits on a frozen node (see `binding`).
pub(crate) async fn declare_parts(conn: &Connection, parts: Vec<Part>) -> Result<(), BrokerError> {
    let mut ch = conn.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    for part in parts {
        match part {
            Part::Exchange(name, kind) => {
                ch.exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
                    .await?;
            }
            Part::Queue(name, args) => ch = declare_queue(conn, ch, &name, args).await?,
        }
    }
    let _ = ch.close(200, "declared".into()).await;
    Ok(())
}

/// The bindings that bring messages in: the DLQ to its fanout, the main queue to the auth
/// exchange with each routing key. Binding is idempotent.
pub(crate) async fn bind(ch: &Channel, topo: &Topology) -> Result<(), BrokerError> {
    let dlq = (topo.dlq.as_str(), topo.dlx.as_str(), "");
    let main = ROUTING_KEYS.map(|key| (topo.queue.as_str(), topo.exchange.as_str(), key));
    for (queue, exchange, key) in [dlq].into_iter().chain(main) {
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

fn queue_type_arg(args: &mut FieldTable, queue_type: QueueType) {
    // Quorum: replicated and durable, the safe home for events we must not lose. Classic
    // is left without the argument so queues made by older deployments compare equal.
    if queue_type == QueueType::Quorum {
        args.insert("x-queue-type".into(), long_string("quorum"));
    }
}

/// A retry tier has the main queue's type. A classic queue lives on one node: while that
/// node is down the tier cannot even be declared (404, "home node ... is down"), so no
/// session could start on any other node of a cluster (tests/it/cluster). Quorum queues
/// expire messages at the head too (RabbitMQ 3.10+); their expiry is dead-lettered
/// at-least-once, which RabbitMQ allows only with `reject-publish` overflow, so a retry is
/// not dropped while the main queue is between leaders.
fn retry_queue_type(args: &mut FieldTable, queue_type: QueueType) {
    if queue_type == QueueType::Quorum {
        args.insert("x-queue-type".into(), long_string("quorum"));
        args.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        args.insert("x-overflow".into(), long_string("reject-publish"));
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// Declares a durable queue; if it exists with other arguments (PRECONDITION_FAILED, which
/// closes the channel), uses it as it is through a passive declare on a new channel.
async fn declare_queue(
    conn: &Connection,
    ch: Channel,
    name: &str,
    args: FieldTable,
) -> Result<Channel, BrokerError> {
    let opts = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    match ch.queue_declare(name.into(), opts, args).await {
        Ok(_) => Ok(ch),
        Err(e) if is_precondition_failed(&e) => {
            tracing::warn!(
                queue = name,
                "queue exists with other arguments; using it as it is"
            );
            let ch = conn.create_channel().await?;
            let passive = QueueDeclareOptions {
                passive: true,
                ..opts
            };
            ch.queue_declare(name.into(), passive, FieldTable::default())
                .await?;
            Ok(ch)
        }
        Err(e) => Err(e.into()),
    }
}

fn is_precondition_failed(e: &lapin::Error) -> bool {
    protocol_code(e) == Some(406)
}

pub(super) fn protocol_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(err) => Some(err.get_id()),
        _ => None,
    }
}
