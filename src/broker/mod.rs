//! The RabbitMQ adapter: connection and confirmed publishing (here), the topology and its
//! declaration (`topology`), the properties of the copies we publish (`properties`).

mod properties;
mod topology;

pub use properties::{republished, text, with_headers};
pub use topology::{ROUTING_KEYS, Topology, declare, queue_counts};

use crate::redact::mask_url;
use crate::settings::Settings;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use secrecy::ExposeSecret;
use std::str::FromStr;
use std::time::Duration;

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
    // silently after a second fault, docs/facts.md#auto-recover-can-stall-silently), so a lost
    // connection surfaces as an error.
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
