//! The RabbitMQ adapter: sessions and confirmed publishing (here), connecting to one node
//! of several (`connect`) over a socket of our own (`transport`), the topology and its
//! declaration (`topology`), looking it up (`lookup`), binding it (`binding`), the
//! properties of the copies we publish (`properties`).

mod binding;
mod connect;
mod lookup;
mod properties;
mod tls;
mod topology;
mod transport;

pub use connect::connect;
pub(crate) use connect::{Connected, connect_from};
pub use lookup::queue_counts;
pub use properties::{republished, text, with_headers};
pub use topology::{ROUTING_KEYS, Topology, declare};

use crate::settings::{BrokerAddress, Settings};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, Consumer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

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
    /// Refused for a reason no retry fixes by itself: a certificate (ours or the broker's)
    /// or the login. Named, so that it never reads like an outage.
    #[error("broker {0} refused us: {1}")]
    Refused(String, String),
}

impl BrokerError {
    /// A TLS file we cannot use or a refusal: a configuration problem, not an outage.
    pub fn is_refusal(&self) -> bool {
        matches!(self, BrokerError::Tls(_) | BrokerError::Refused(..))
    }
}

pub struct Session {
    pub connection: Connection,
    /// Consumes the main queue; acks go here.
    pub consume: Channel,
    /// Publishes retries and dead letters in confirm mode.
    pub publish: Channel,
    /// The node connected to, and its place in `RABBITMQ_ADDRESSES`.
    pub address: BrokerAddress,
    pub index: usize,
    /// Set when a copy we published came back unroutable (see `returned`).
    returned: AtomicBool,
}

impl Session {
    /// Connects, makes sure of the topology (`prepare`) and opens the consuming and
    /// publishing channels: for `send`, `dlq replay` and `brake release`.
    pub async fn open(settings: &Settings, topo: &Topology) -> Result<Self, BrokerError> {
        let session = Self::connect_from(settings, 0).await?;
        session.prepare(topo, false).await?;
        Ok(session)
    }

    /// Connects and opens the two channels, declaring nothing: for commands that only look.
    pub async fn open_undeclared(settings: &Settings) -> Result<Self, BrokerError> {
        Self::connect_from(settings, 0).await
    }

    /// Connects, trying the addresses from `start` on (see `connect_from`), and opens the
    /// two channels.
    pub(crate) async fn connect_from(
        settings: &Settings,
        start: usize,
    ) -> Result<Self, BrokerError> {
        Self::channels(connect_from(settings, start).await?).await
    }

    /// Makes sure of the topology; on failure the session is closed.
    ///
    /// Looks the exchanges and queues up and declares only those missing (a queue deleted,
    /// a broker that lost its data, a first start), then binds, waiting a bounded time
    /// (`binding`). A declare, like a binding, is a metadata change the whole cluster
    /// agrees on: while a node hangs without having been dropped by the others
    /// (`net_ticktime`, 60 s by default) it waits for that node; looking waits on no other
    /// node, so a session (and a command) on a cluster with a frozen node starts at once.
    ///
    /// `full`: declare everything and wait for the bindings, as after a copy of ours came
    /// back unroutable (`returned`): something the look-up cannot see is wrong.
    pub(crate) async fn prepare(&self, topo: &Topology, full: bool) -> Result<(), BrokerError> {
        let prepared = async {
            if full {
                return declare(&self.connection, topo).await;
            }
            let missing = lookup::missing(&self.connection, topo).await?;
            if !missing.is_empty() {
                topology::declare_parts(&self.connection, missing).await?;
            }
            let broker = self.address.to_string();
            binding::bind_within(&self.connection, topo, broker).await
        };
        let prepared = prepared.await;
        if prepared.is_err() {
            self.close().await;
        }
        prepared
    }

    /// Whether a copy published in this session came back unroutable (a queue or binding
    /// of ours gone): the worker's next session then declares in full.
    pub(crate) fn returned(&self) -> bool {
        self.returned.load(Ordering::Relaxed)
    }

    async fn channels(connected: Connected) -> Result<Self, BrokerError> {
        let Connected {
            connection,
            address,
            index,
        } = connected;
        let consume = connection.create_channel().await?;
        let publish = connection.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            connection,
            consume,
            publish,
            address,
            index,
            returned: AtomicBool::new(false),
        })
    }

    /// Registers a consumer. The prefetch window bounds the deliveries held unacked, and so
    /// memory; to drain fast it must exceed the batch size, so the next batch arrives while
    /// one commits. The worker sizes it in bytes (`worker::window`).
    pub async fn consumer(&self, queue: &str, prefetch: u16) -> lapin::Result<Consumer> {
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
            Confirmation::Ack(None) => Ok(()),
            // Returned: only the broker's reason is named, never the body (whose lapin log
            // line is off, see `telemetry`).
            Confirmation::Ack(Some(m)) | Confirmation::Nack(Some(m)) => {
                self.returned.store(true, Ordering::Relaxed);
                Err(BrokerError::NotConfirmed(format!(
                    "{exchange}/{routing_key} (returned: {} {})",
                    m.reply_code, m.reply_text
                )))
            }
            _ => Err(BrokerError::NotConfirmed(format!(
                "{exchange}/{routing_key}"
            ))),
        }
    }

    /// Closes politely, but within `CLOSE_TIMEOUT`: a frozen node never answers close-ok.
    pub async fn close(&self) {
        let close = async {
            let _ = self.consume.close(200, "shutdown".into()).await;
            let _ = self.publish.close(200, "shutdown".into()).await;
            let _ = self.connection.close(200, "shutdown".into()).await;
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    }
}
