//! TLS for the broker connection: what we trust and what we present, read at every
//! connect (a certificate renewed on disk is used by the next connection), and which failed
//! connects are refusals, which no retry fixes by itself, rather than outages.

use super::BrokerError;
use crate::settings::{BrokerTls, PemFile};
use crate::tls::{ClientIdentity, Hints, Named, certificate_problem};
use lapin::ErrorKind;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};

const HINTS: Hints<'static> = Hints {
    trust: "RABBITMQ_CA_FILE",
    identity: "RABBITMQ_CERT_FILE and RABBITMQ_KEY_FILE",
};

/// `amqps://` verifies the broker's certificate against the system's roots, or against the
/// CA file when one is set, and presents the client certificate when one is set.
pub(super) fn config(tls: &BrokerTls) -> Result<OwnedTLSConfig, BrokerError> {
    let cert_chain = match &tls.ca {
        Some(ca) => Some(
            std::fs::read_to_string(&ca.path)
                .map_err(|e| BrokerError::Tls(format!("{}: {e}", named(ca))))?,
        ),
        None => None,
    };
    let identity = match &tls.client {
        Some(files) => {
            let id = ClientIdentity::load(named(&files.cert), named(&files.key))
                .map_err(BrokerError::Tls)?;
            // tcp-stream reads any of PKCS#8, PKCS#1 and SEC1 under this name.
            Some(OwnedIdentity::PKCS8 {
                pem: id.cert_pem,
                key: id.key_pem,
            })
        }
        None => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

fn named(file: &PemFile) -> Named<'_> {
    Named {
        path: &file.path,
        setting: file.setting,
    }
}

/// A failed connect to `shown`: a refusal when a certificate or the login was refused,
/// the error as it is otherwise.
pub(super) fn refusal(e: lapin::Error, shown: &str) -> BrokerError {
    let why = match e.kind() {
        ErrorKind::IOError(io) => certificate_problem(io.as_ref(), &HINTS),
        ErrorKind::ProtocolError(amqp)
            if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) =>
        {
            Some(format!(
                "login refused ({}); check the user and password of RABBITMQ_URL, or with \
                 auth_mechanism=external that the broker has the user its \
                 ssl_cert_login_from names in our certificate",
                amqp.get_message()
            ))
        }
        _ => None,
    };
    match why {
        Some(why) => BrokerError::Refused(shown.to_string(), why),
        None => e.into(),
    }
}
