//! `RABBITMQ_ADDRESSES`: the nodes of a RabbitMQ cluster as `host:port`, tried in turn by
//! `broker::connect` with the credentials, vhost and TLS of `RABBITMQ_URL`.

use super::{SettingsError, err};
use crate::redact::mask_url;
use std::fmt;
use std::net::Ipv6Addr;

const VAR: &str = "RABBITMQ_ADDRESSES";

/// One broker node. `Display` gives `host:port` (an IPv6 host in brackets): what logs and
/// the `user_sync_broker_address` metric show, never a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The entries of the list (already split and trimmed); none means "use the URL's host".
pub(super) fn parse(entries: &[String]) -> Result<Vec<BrokerAddress>, SettingsError> {
    let mut out: Vec<BrokerAddress> = Vec::with_capacity(entries.len());
    for entry in entries {
        let address = one(entry)?;
        if out.contains(&address) {
            return Err(err(VAR, format!("{address} is listed twice")));
        }
        out.push(address);
    }
    Ok(out)
}

fn one(entry: &str) -> Result<BrokerAddress, SettingsError> {
    // A URL pasted here by mistake must not print its password in the error.
    let shown = if entry.contains(['@', '/']) {
        mask_url(entry)
    } else {
        entry.to_string()
    };
    let shape = || err(VAR, format!("{shown:?} is not host:port"));
    let (host, port) = entry.rsplit_once(':').ok_or_else(shape)?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().map_err(|_| shape())?.to_string(),
        None if is_hostname(host) => host.to_string(),
        None => return Err(shape()),
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(err(VAR, format!("{shown:?}: the port must be 1-65535"))),
    };
    Ok(BrokerAddress { host, port })
}

/// A DNS name or an IPv4 address: no scheme, user, path or stray `:` can slip through.
fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(raw: &[&str]) -> Result<Vec<BrokerAddress>, SettingsError> {
        parse(&raw.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn names_ipv4_and_bracketed_ipv6_are_addresses() {
        let got = list(&["rabbit-1.internal:5672", "10.0.0.2:5671", "[::1]:5673"]).unwrap();
        let shown: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["rabbit-1.internal:5672", "10.0.0.2:5671", "[::1]:5673"]
        );
        assert_eq!(got[2].host, "::1");
    }

    #[test]
    fn a_bad_entry_is_named() {
        for bad in [
            "rabbit-1",
            "rabbit-1:",
            "rabbit-1:0",
            "rabbit-1:70000",
            "rabbit-1:amqp",
            ":5672",
            "amqp://rabbit-1:5672",
            "::1:5672",
            "[nope]:5672",
        ] {
            let e = list(&["ok:5672", bad]).unwrap_err();
            assert_eq!(e.var, VAR, "{bad}");
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
        for url in ["amqp://u:secret@rabbit-1:5672", "u:secret@rabbit-1:5672"] {
            let e = list(&[url]).unwrap_err();
            assert!(!e.to_string().contains("secret"), "{e}");
        }
        let e = list(&["a:1", "b:2", "a:1"]).unwrap_err();
        assert!(e.problem.contains("twice"), "{e}");
    }
}
