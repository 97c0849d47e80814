//! Connecting: to the host of `RABBITMQ_URL`, or to the nodes of `RABBITMQ_ADDRESSES` in
//! turn with the URL's credentials, vhost and TLS. The worker and every operator command
//! connect through here.

use super::BrokerError;
use super::tls;
use super::transport::Attempt;
use crate::redact::mask_url;
use crate::settings::{BrokerAddress, Settings};
use lapin::Connection;
use lapin::tcp::OwnedTLSConfig;
use lapin::uri::AMQPUri;
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
    let mut uri = AMQPUri::from_str(url).map_err(|_| BrokerError::Url(mask_url(url)))?;
    // The URL's own `heartbeat=` wins, as it always has; lapin closes the connection once
    // nothing has been read for two intervals (docs/facts.md#heartbeat).
    uri.query
        .heartbeat
        .get_or_insert(settings.rabbitmq_heartbeat_secs);
    let tls = tls::config(&settings.rabbitmq_tls)?;
    let list = &settings.rabbitmq_addresses;
    if list.is_empty() {
        let address = url_address(url, &uri);
        uri.authority.host = address.host.clone();
        let connection = attempt(uri, tls, address.to_string()).await?;
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

/// One connection attempt; `shown` names the target in a timeout or a refusal. An
/// attempt given up on is torn down (see `transport`), not left to lapin's thread.
async fn attempt(
    uri: AMQPUri,
    tls: OwnedTLSConfig,
    shown: String,
) -> Result<Connection, BrokerError> {
    // Timed out, the attempt is dropped inside the connect future, which shuts its socket
    // down; failed, it is dropped here, the same.
    let connect = Attempt::connect(uri.clone(), tls.clone());
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok((attempt, Ok(connection))) => {
            attempt.keep();
            Ok(connection)
        }
        Ok((_, Err(e))) => Err(tls::explain(e, &uri, &tls, &shown).await),
        Err(_) => Err(BrokerError::Timeout(shown)),
    }
}

/// The URL's own host and port. lapin's `AMQPUri` takes the host from `Url::domain()`, which
/// is `None` for an IPv6 literal (`amqp://u:p@[fd00::5]:5672/`), and then silently uses
/// `localhost`: the host is read from the URL itself instead, as `RABBITMQ_ADDRESSES`
/// entries are (`settings::addresses`).
fn url_address(url: &str, uri: &AMQPUri) -> BrokerAddress {
    let host = match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Ipv6(v6)) => v6.to_string(),
        Some(url::Host::Ipv4(v4)) => v4.to_string(),
        // A name (lapin percent-decodes it), or no host at all: lapin's reading stands.
        Some(url::Host::Domain(_)) | None => uri.authority.host.clone(),
    };
    BrokerAddress {
        host,
        port: uri.authority.port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(url: &str) -> String {
        let uri = AMQPUri::from_str(url).unwrap();
        url_address(url, &uri).to_string()
    }

    #[test]
    fn the_host_is_the_urls_own_an_ipv6_literal_included() {
        assert_eq!(address("amqp://u:p@[::1]:5673/%2f"), "[::1]:5673");
        assert_eq!(address("amqps://u:p@[fd00::5]/v"), "[fd00::5]:5671");
        assert_eq!(address("amqp://u:p@10.0.0.2:5672/"), "10.0.0.2:5672");
        assert_eq!(address("amqp://u:p@rabbit-1/%2f"), "rabbit-1:5672");
    }
}
