//! Connecting: to the host of `RABBITMQ_URL`, or to the nodes of `RABBITMQ_ADDRESSES` in
//! turn with the URL's credentials, vhost and TLS. The worker and every operator command
//! connect through here.

use super::BrokerError;
use crate::redact::mask_url;
use crate::settings::{BrokerAddress, Settings};
use lapin::tcp::OwnedTLSConfig;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use secrecy::ExposeSecret;
use std::str::FromStr;
use std::time::Duration;

/// Per address: a frozen node accepts the TCP connection and then answers nothing, so
/// without a bound one dead node would hold the whole round.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection and the node it reached.
pub(crate) struct Connected {
    pub connection: Connection,
    pub address: BrokerAddress,
    /// Its place in the address list, where the next round starts after it.
    pub index: usize,
}

/// Connects to the first address that answers, starting with the first: for the operator's
/// commands (`status`, `dlq`, `send`, `brake`).
pub async fn connect(settings: &Settings) -> Result<Connection, BrokerError> {
    Ok(connect_from(settings, 0).await?.connection)
}

/// Tries every address once, starting at `start` (wrapping), and returns the first
/// connection made; the last error if none answers.
///
/// The worker passes the address after the one its session was lost on: a lost node is
/// then tried last rather than first, so a reconnect goes straight to a live node instead
/// of paying a refused connection or a connect timeout on the dead one every time.
pub(crate) async fn connect_from(
    settings: &Settings,
    start: usize,
) -> Result<Connected, BrokerError> {
    let url = settings.rabbitmq_url.expose_secret();
    let masked = mask_url(url);
    let mut uri = AMQPUri::from_str(url).map_err(|_| BrokerError::Url(masked.clone()))?;
    // The URL's own `heartbeat=` wins, as it always has; lapin closes the connection once
    // nothing has been read for two intervals (docs/facts.md#heartbeat).
    uri.query
        .heartbeat
        .get_or_insert(settings.rabbitmq_heartbeat_secs);
    let tls = tls_config(settings)?;
    let list = &settings.rabbitmq_addresses;
    if list.is_empty() {
        let address = BrokerAddress {
            host: uri.authority.host.clone(),
            port: uri.authority.port,
        };
        let connection = attempt(uri, tls, masked).await?;
        return Ok(Connected {
            connection,
            address,
            index: 0,
        });
    }
    let mut last = None;
    for step in 0..list.len() {
        let index = (start + step) % list.len();
        let address = &list[index];
        let mut node = uri.clone();
        node.authority.host = address.host.clone();
        node.authority.port = address.port;
        match attempt(node, tls.clone(), address.to_string()).await {
            Ok(connection) => {
                return Ok(Connected {
                    connection,
                    address: address.clone(),
                    index,
                });
            }
            Err(error) => {
                tracing::warn!(broker = %address, %error, "broker node unreachable");
                last = Some(error);
            }
        }
    }
    Err(last.expect("the address list is not empty"))
}

/// One connection attempt; `shown` names the target in a timeout (never a password).
async fn attempt(
    uri: AMQPUri,
    tls: OwnedTLSConfig,
    shown: String,
) -> Result<Connection, BrokerError> {
    let runtime = lapin::runtime::default_runtime()?;
    // No auto-recover: our supervisor owns reconnection (lapin's recovery can wedge
    // silently after a second fault, docs/facts.md#auto-recover-can-stall-silently), so a lost
    // connection surfaces as an error.
    let connect =
        Connection::connect_uri_with_config(uri, ConnectionProperties::default(), tls, runtime);
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(BrokerError::Timeout(shown)),
    }
}

/// `amqps://` verifies the broker's certificate against the system's roots, or against
/// `RABBITMQ_CA_FILE` when set. With an address list each node's host is the name checked.
fn tls_config(settings: &Settings) -> Result<OwnedTLSConfig, BrokerError> {
    Ok(match &settings.rabbitmq_ca_file {
        Some(path) => OwnedTLSConfig {
            identity: None,
            cert_chain: Some(std::fs::read_to_string(path).map_err(|e| {
                BrokerError::Tls(format!("RABBITMQ_CA_FILE {}: {e}", path.display()))
            })?),
        },
        None => OwnedTLSConfig::default(),
    })
}
