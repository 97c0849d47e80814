//! The broker as the tests look at it and rearrange it: connections, queue depths and
//! consumers, messages taken off a queue, queues declared or deleted by hand, policies.

use super::{amqp, wait_for};
use lapin::options::{
    BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties};
use std::time::Duration;
use user_sync::broker::Topology;

/// A plain connection to the broker at `url`.
pub(crate) async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// A connection to the broker at `url` and a channel on it in confirm mode.
pub(crate) async fn confirming(url: &str) -> (Connection, Channel) {
    let conn = connect(url).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

/// A plain connection to the local broker.
pub(crate) async fn local() -> Connection {
    connect(&amqp()).await
}

/// (messages ready, consumers) of a queue on the local broker, by passive declare; None
/// if it does not exist.
pub(crate) async fn queue_counts(queue: &str) -> Option<(u32, u32)> {
    queue_counts_at(&amqp(), queue).await
}

/// (messages ready, consumers) of `queue`, asked of the broker at `url`; None if it does
/// not exist or the broker cannot say within 5 s.
pub(crate) async fn queue_counts_at(url: &str, queue: &str) -> Option<(u32, u32)> {
    let look = async {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .ok()?;
        let ch = conn.create_channel().await.ok()?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = ch
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .ok();
        let _ = conn.close(200, "bye".into()).await;
        q.map(|q| (q.message_count(), q.consumer_count()))
    };
    tokio::time::timeout(Duration::from_secs(5), look)
        .await
        .ok()
        .flatten()
}

/// Waits until `queue`, on the broker at `url`, has exactly `n` consumers.
pub(crate) async fn wait_consumers(url: &str, queue: &str, n: u32, what: &str, limit: Duration) {
    wait_for(what, limit, || async {
        queue_counts_at(url, queue)
            .await
            .is_some_and(|(_, c)| c == n)
    })
    .await;
}

/// Waits until `queue` holds exactly `n` messages.
pub(crate) async fn wait_depth(queue: &str, n: u32, what: &str, limit: Duration) {
    wait_for(what, limit, || async {
        queue_counts(queue).await.is_some_and(|(got, _)| got == n)
    })
    .await;
}

/// Takes every message from a queue of the local broker (acked: the queue is left empty).
pub(crate) async fn get_all(queue: &str) -> Vec<lapin::message::Delivery> {
    get_all_at(&amqp(), queue).await
}

/// Takes every message of `queue` on the broker at `url` (acked: the queue is left empty).
pub(crate) async fn get_all_at(url: &str, queue: &str) -> Vec<lapin::message::Delivery> {
    let conn = connect(url).await;
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Ok(Some(m)) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
    {
        out.push(m.delivery);
    }
    let _ = conn.close(200, "bye".into()).await;
    out
}

/// Messages ready or unacknowledged in `queue`, as `rabbitmqctl` reports them.
pub(crate) fn unsettled(queue: &str) -> Option<u64> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "name", "messages"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut cols = l.split_whitespace();
        (cols.next() == Some(queue)).then(|| cols.next()?.parse().ok())?
    })
}

/// Declares a durable queue `name` with `args`, as an operator or an older version would.
pub(crate) async fn declare_queue(conn: &Connection, name: &str, args: FieldTable) {
    let ch = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(name.into(), durable, args).await.unwrap();
    let _ = ch.close(200, "declared".into()).await;
}

pub(crate) async fn delete_queue(conn: &Connection, name: &str) {
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(name.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let _ = ch.close(200, "deleted".into()).await;
}

/// Every queue and every exchange of `topology`.
pub(crate) fn names_of(topology: &Topology) -> (Vec<String>, Vec<String>) {
    let retries = topology.retry_queues.iter().map(|(q, _)| q);
    let queues = [&topology.queue, &topology.dlq, &topology.hold];
    let queues = queues.into_iter().chain(retries).cloned().collect();
    let exchanges = vec![topology.exchange.clone(), topology.dlx.clone()];
    (queues, exchanges)
}

/// Deletes `queues` and `exchanges` through `conn`; those already gone are passed over.
pub(crate) async fn delete_all(conn: &Connection, queues: &[String], exchanges: &[String]) {
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    for q in queues {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for e in exchanges {
        let _ = ch
            .exchange_delete(e.as_str().into(), Default::default())
            .await;
    }
}

pub(crate) fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

pub(crate) fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    args
}

/// A retry tier as the previous version declared it: classic (no `x-queue-type`).
pub(crate) fn classic_tier_args(topo: &Topology, delay: Duration) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(delay.as_millis() as i64),
    );
    args.insert("x-dead-letter-exchange".into(), long_string(""));
    args.insert("x-dead-letter-routing-key".into(), long_string(&topo.queue));
    args
}

/// A RabbitMQ policy on the queues matching one exact name, cleared on drop.
pub(crate) struct Policy {
    name: String,
}

impl Policy {
    pub(crate) async fn set(queue: &str, definition: &str) -> Self {
        let name = format!("{queue}.policy");
        let pattern = format!("^{}$", queue.replace('.', "\\."));
        let ok = std::process::Command::new("rabbitmqctl")
            .args([
                "set_policy",
                "--apply-to",
                "queues",
                &name,
                &pattern,
                definition,
            ])
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "rabbitmqctl set_policy");
        let policy = Self { name };
        let listed = || async {
            let out = std::process::Command::new("rabbitmqctl")
                .args(["list_queues", "-q", "name", "policy"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.split_whitespace().eq([queue, policy.name.as_str()]))
        };
        wait_for("policy applied", Duration::from_secs(30), listed).await;
        policy
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["clear_policy", &self.name])
            .output();
    }
}
