//! The RabbitMQ adapter: connection, topology (SPEC section 6) and confirmed publishing.

use crate::redact::mask_url;
use crate::settings::{QueueType, Settings};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use secrecy::ExposeSecret;
use std::str::FromStr;
use std::time::Duration;

pub const ROUTING_KEYS: [&str; 3] = ["user.created", "user.updated", "user.deleted"];

/// Header that carries the original routing key through the retry queues, which hand
/// messages back through the default exchange under the queue's own name.
pub const ROUTING_KEY_HEADER: &str = "x-routing-key";

/// Header that `brake release` stamps on each deactivation it moves back: the token of the
/// release it recorded in the brake log.
pub const RELEASE_HEADER: &str = "x-brake-release";

/// Missed heartbeats are how a half-open TCP connection is noticed: 15 s instead of the
/// server's 60 s default finds a dead peer in about 30 s rather than two minutes.
const HEARTBEAT_S: u16 = 15;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("broker: connecting to {0} timed out")]
    Timeout(String),
    #[error("broker: invalid RABBITMQ_URL: {0}")]
    Url(String),
    #[error("broker: publish to {0} was not confirmed")]
    NotConfirmed(String),
    #[error("broker: {0}")]
    Tls(String),
}

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

pub struct Session {
    pub connection: Connection,
    /// Consumes the main queue; acks go here.
    pub consume: Channel,
    /// Publishes retries and dead letters in confirm mode.
    pub publish: Channel,
}

/// Connects with the settings' URL; `amqps://` verifies the broker's certificate against
/// the system's roots, or against `RABBITMQ_CA_FILE` when set.
pub async fn connect(settings: &Settings) -> Result<Connection, BrokerError> {
    let url = &settings.rabbitmq_url;
    let masked = mask_url(url.expose_secret());
    let mut uri =
        AMQPUri::from_str(url.expose_secret()).map_err(|_| BrokerError::Url(masked.clone()))?;
    uri.query.heartbeat.get_or_insert(HEARTBEAT_S);
    let tls = match &settings.rabbitmq_ca_file {
        Some(path) => OwnedTLSConfig {
            identity: None,
            cert_chain: Some(std::fs::read_to_string(path).map_err(|e| {
                BrokerError::Tls(format!("RABBITMQ_CA_FILE {}: {e}", path.display()))
            })?),
        },
        None => OwnedTLSConfig::default(),
    };
    let runtime = lapin::runtime::default_runtime()?;
    // No auto-recover: our supervisor owns reconnection (lapin's recovery can wedge
    // silently after a second fault, PITFALLS.md), so a lost connection surfaces as an error.
    let connect =
        Connection::connect_uri_with_config(uri, ConnectionProperties::default(), tls, runtime);
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(BrokerError::Timeout(masked)),
    }
}

impl Session {
    /// Connects, declares the topology and opens the consuming and publishing channels.
    pub async fn open(settings: &Settings, topo: &Topology) -> Result<Self, BrokerError> {
        let session = Self::open_undeclared(settings).await?;
        declare(&session.connection, topo).await?;
        Ok(session)
    }

    /// Connects and opens the two channels, declaring nothing: for commands that only look.
    pub async fn open_undeclared(settings: &Settings) -> Result<Self, BrokerError> {
        let connection = connect(settings).await?;
        let consume = connection.create_channel().await?;
        let publish = connection.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            connection,
            consume,
            publish,
        })
    }

    /// Registers the consumer. The prefetch window bounds the deliveries held unacked, and
    /// so memory; it must exceed the batch size so the next batch arrives while one commits.
    pub async fn consumer(&self, queue: &str, prefetch: u16) -> Result<Consumer, BrokerError> {
        self.consume
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let consumer = self
            .consume
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(consumer)
    }

    /// Publishes and waits for the broker's confirm. `mandatory` makes an unroutable message
    /// (its queue deleted) come back as a failure instead of vanishing.
    pub async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let confirm = self
            .publish
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await?
            .await?;
        match confirm {
            lapin::Confirmation::Ack(None) => Ok(()),
            _ => Err(BrokerError::NotConfirmed(format!(
                "{exchange}/{routing_key}"
            ))),
        }
    }

    pub async fn close(&self) {
        let _ = self.consume.close(200, "shutdown".into()).await;
        let _ = self.publish.close(200, "shutdown".into()).await;
        let _ = self.connection.close(200, "shutdown".into()).await;
    }
}

/// Declares everything idempotently; called at start and after every reconnect.
pub async fn declare(conn: &Connection, topo: &Topology) -> Result<(), BrokerError> {
    let ch = conn.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    // The auth system's exchange; declaring it too lets us start before the publisher.
    ch.exchange_declare(
        topo.exchange.as_str().into(),
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        topo.dlx.as_str().into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;

    let mut dlq_args = FieldTable::default();
    queue_type_arg(&mut dlq_args, topo.queue_type);
    let ch = declare_queue(conn, ch, &topo.dlq, dlq_args).await?;
    ch.queue_bind(
        topo.dlq.as_str().into(),
        topo.dlx.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;

    let mut hold_args = FieldTable::default();
    queue_type_arg(&mut hold_args, topo.queue_type);
    let ch = declare_queue(conn, ch, &topo.hold, hold_args).await?;

    let mut main_args = FieldTable::default();
    queue_type_arg(&mut main_args, topo.queue_type);
    // Safety net: anything the broker itself dead-letters (a quorum delivery limit, a
    // reject without requeue) lands in our DLQ instead of being dropped.
    main_args.insert("x-dead-letter-exchange".into(), long_string(&topo.dlx));
    let ch = declare_queue(conn, ch, &topo.queue, main_args).await?;
    for key in ROUTING_KEYS {
        ch.queue_bind(
            topo.queue.as_str().into(),
            topo.exchange.as_str().into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }

    let mut ch = ch;
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
        // Classic, whatever the main queue's type: a short-lived holding pen whose only job
        // is head-of-queue expiry, which classic queues have always done.
        ch = declare_queue(conn, ch, name, args).await?;
    }
    let _ = ch.close(200, "declared".into()).await;
    Ok(())
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

fn queue_type_arg(args: &mut FieldTable, queue_type: QueueType) {
    // Quorum: replicated and durable, the safe home for events we must not lose. Classic
    // is left without the argument so queues made by older deployments compare equal.
    if queue_type == QueueType::Quorum {
        args.insert("x-queue-type".into(), long_string("quorum"));
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
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(err) if err.get_id() == 406)
}

/// Reads a string header, whatever AMQP string type the publisher chose.
pub fn header_str(props: &BasicProperties, key: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Reads an integer header.
pub fn header_int(props: &BasicProperties, key: &str) -> Option<i64> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some((*v).into()),
        AMQPValue::LongUInt(v) => Some((*v).into()),
        AMQPValue::ShortInt(v) => Some((*v).into()),
        AMQPValue::ShortShortInt(v) => Some((*v).into()),
        AMQPValue::ShortShortUInt(v) => Some((*v).into()),
        _ => None,
    }
}

/// The original properties with `extra` headers set: dead letters and retries keep the
/// publisher's content type, message id and headers.
pub fn with_headers(props: &BasicProperties, extra: &[(&str, AMQPValue)]) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    for (k, v) in extra {
        headers.insert(ShortString::from(*k), v.clone());
    }
    republished(props).with_headers(headers)
}

/// The properties of a copy this service publishes (retry, dead letter, held deactivation,
/// replay, release): the publisher's, persistent, and without its `expiration`. A TTL the
/// producer chose for its own queue would otherwise make a parked deactivation or a dead
/// letter vanish silently; our retry tiers set their delay on the queue, not the message.
pub fn republished(p: &BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default().with_delivery_mode(2);
    macro_rules! keep {
        ($($get:ident => $set:ident),*) => {
            $(if let Some(v) = p.$get() { out = out.$set(v.clone()); })*
        };
    }
    keep!(
        content_type => with_content_type,
        content_encoding => with_content_encoding,
        headers => with_headers,
        priority => with_priority,
        correlation_id => with_correlation_id,
        reply_to => with_reply_to,
        message_id => with_message_id,
        timestamp => with_timestamp,
        kind => with_type,
        user_id => with_user_id,
        app_id => with_app_id,
        cluster_id => with_cluster_id
    );
    out
}

pub fn text(s: &str) -> AMQPValue {
    long_string(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn producers() -> BasicProperties {
        BasicProperties::default()
            .with_expiration("300".into())
            .with_message_id("m-1".into())
            .with_content_type("application/json".into())
            .with_delivery_mode(1)
            .with_priority(3)
    }

    #[test]
    fn a_copy_keeps_the_producers_properties_but_not_its_expiration() {
        let copy = republished(&producers());
        assert_eq!(copy.expiration(), &None);
        assert_eq!(copy.message_id().as_ref().map(|m| m.as_str()), Some("m-1"));
        assert_eq!(
            copy.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        assert_eq!(
            (copy.delivery_mode(), copy.priority()),
            (&Some(2), &Some(3))
        );
    }

    #[test]
    fn a_copy_with_headers_has_no_expiration_either() {
        let copy = with_headers(&producers(), &[("x-error", text("boom"))]);
        assert_eq!(copy.expiration(), &None);
        assert_eq!(header_str(&copy, "x-error").as_deref(), Some("boom"));
    }
}
