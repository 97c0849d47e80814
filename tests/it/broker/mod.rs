//! The broker connection and topology: which nodes and addresses are tried and how,
//! TLS, heartbeats, and a topology that operators or older versions changed by hand.
//! Failover on a real cluster is in `cluster`.

mod addresses;
mod connecting;
mod tls;
mod topology;

use crate::support::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// `TEST_RABBITMQ_URL` with its host replaced by one that does not resolve.
fn url_with_another_host() -> String {
    let url = amqp();
    let other = url.replacen(&broker_addr(), "ignored.invalid:5672", 1);
    assert_ne!(url, other, "TEST_RABBITMQ_URL names host:port");
    other
}
