//! TLS for the broker connection: what we trust and what we present, read at every
//! connect (a certificate renewed on disk is used by the next connection), and which failed
//! connects are refusals, which no retry fixes by itself, rather than outages.

use super::BrokerError;
use crate::settings::{BrokerTls, PemFile};
use crate::tls::{ClientIdentity, Hints, Named, certificate_problem};
use futures_util::io::AsyncReadExt;
use lapin::ErrorKind;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::tcp::{AMQPUriTcpExt, OwnedIdentity, OwnedTLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri};
use std::io;
use std::time::Duration;

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

/// How long `probe` waits for the broker's verdict on our certificate.
const PROBE: Duration = Duration::from_secs(3);

/// A failed connect to `uri` (shown as `shown`): a refusal when a certificate or the login
/// was refused, the error as it is otherwise.
///
/// With TLS 1.3 the broker judges our certificate (or its absence) only after our side of
/// the handshake is done, and lapin writes the AMQP header at once: a broker that refuses
/// closes with that header unread, the kernel answers it with a reset, and the reset can
/// discard the alert before we read it. A connect that ends in a reset is therefore tried
/// once more as a probe that writes nothing and waits for the verdict.
pub(super) async fn explain(
    e: lapin::Error,
    uri: &AMQPUri,
    tls: &OwnedTLSConfig,
    shown: &str,
) -> BrokerError {
    let error = refusal(e, shown);
    let reset = match &error {
        BrokerError::Amqp(e) => match e.kind() {
            ErrorKind::IOError(io) => matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        },
        _ => false,
    };
    if reset
        && uri.scheme == AMQPScheme::AMQPS
        && let Some(why) = probe(uri, tls).await
    {
        return BrokerError::Refused(shown.to_string(), why);
    }
    error
}

/// A TLS handshake with `uri`, then a read with nothing written: a broker that accepts
/// our certificate waits for the AMQP header (the read times out), one that refuses it
/// sends its alert. `None` unless that alert names a certificate.
async fn probe(uri: &AMQPUri, tls: &OwnedTLSConfig) -> Option<String> {
    let runtime = lapin::runtime::default_runtime().ok()?;
    let verdict = async {
        let mut stream = uri
            .connect_with_config_async(tls.as_ref(), &runtime)
            .await?;
        let mut byte = [0u8; 1];
        stream.read(&mut byte).await
    };
    match tokio::time::timeout(PROBE, verdict).await {
        Ok(Err(io)) => certificate_problem(&io, &HINTS),
        _ => None,
    }
}

/// A failed connect to `shown`: a refusal when a certificate or the login was refused,
/// the error as it is otherwise.
fn refusal(e: lapin::Error, shown: &str) -> BrokerError {
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
