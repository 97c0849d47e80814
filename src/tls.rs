//! Client certificates: reading one (a PEM chain and its key, checked to belong together)
//! and telling a TLS failure that is about a certificate, which no retry fixes, from a
//! network fault. The broker connection (`RABBITMQ_CERT_FILE`) and the store (`sslcert` in
//! `DATABASE_URL`) share both.

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, Error as TlsError};
use std::fmt;
use std::path::Path;

/// A certificate chain and its private key as PEM, for a TLS client to present. `Debug`
/// never shows the key.
pub(crate) struct ClientIdentity {
    pub(crate) cert_pem: Vec<u8>,
    pub(crate) key_pem: Vec<u8>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"***")
            .finish()
    }
}

/// A PEM file and the setting that names it, as errors show them.
pub(crate) struct Named<'a> {
    pub(crate) path: &'a Path,
    pub(crate) setting: &'a str,
}

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.setting, self.path.display())
    }
}

impl ClientIdentity {
    /// Reads `cert` (the client's certificate first, then any intermediates) and `key`
    /// (PKCS#8, PKCS#1 or SEC1 PEM, unencrypted) and checks that the key is the
    /// certificate's. Errors name the file and its setting, never the key's content.
    pub(crate) fn load(cert: Named<'_>, key: Named<'_>) -> Result<Self, String> {
        let cert_pem = read(&cert)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| format!("{cert}: not a PEM certificate file"))?;
        if chain.is_empty() {
            return Err(format!("{cert}: no PEM certificate in it"));
        }
        let key_pem = read(&key)?;
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| key_error(&key, e))?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        rustls::sign::CertifiedKey::from_der(chain, private, &provider).map_err(|e| match e {
            TlsError::InconsistentKeys(_) => {
                format!("{key}: the key does not belong to the certificate of {cert}")
            }
            e => format!("{key} with {cert}: {e}"),
        })?;
        Ok(Self { cert_pem, key_pem })
    }
}

fn read(file: &Named<'_>) -> Result<Vec<u8>, String> {
    std::fs::read(file.path).map_err(|e| format!("{file}: cannot read it: {e}"))
}

/// The PEM parser's own errors may quote a line of the file: none is repeated here.
fn key_error(key: &Named<'_>, e: pem::Error) -> String {
    match e {
        pem::Error::NoItemsFound => format!(
            "{key}: no unencrypted private key in it (PEM `PRIVATE KEY`, `RSA PRIVATE KEY` \
             or `EC PRIVATE KEY`; an `ENCRYPTED PRIVATE KEY` must be decrypted first)"
        ),
        _ => format!("{key}: not a valid PEM private key"),
    }
}

/// Where to look when a certificate is refused: the settings of each side.
pub(crate) struct Hints<'a> {
    /// What decides which servers we trust (`RABBITMQ_CA_FILE`).
    pub(crate) trust: &'a str,
    /// What we present (`RABBITMQ_CERT_FILE and RABBITMQ_KEY_FILE`).
    pub(crate) identity: &'a str,
}

/// What `error` (or an error inside it) says about certificates, if it is a TLS failure
/// about one: the server refused ours or asked for one we did not send, or we refused
/// the server's. `None` for anything else (a reset, a timeout, a closed socket).
pub(crate) fn certificate_problem(
    error: &(dyn std::error::Error + 'static),
    hints: &Hints<'_>,
) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<TlsError>() {
            return describe(tls, hints);
        }
        // An `io::Error`'s `source` skips the error it wraps: look inside it first.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<TlsError>())
        {
            return describe(inner, hints);
        }
        next = e.source();
    }
    None
}

fn describe(tls: &TlsError, hints: &Hints<'_>) -> Option<String> {
    use AlertDescription as A;
    let ours = |what: &str| Some(format!("{what} ({tls}); check {}", hints.identity));
    match tls {
        TlsError::AlertReceived(A::CertificateRequired) => {
            ours("the server requires a client certificate and none was presented")
        }
        TlsError::AlertReceived(A::UnknownCA) => {
            ours("the server does not trust the CA that signed our client certificate")
        }
        TlsError::AlertReceived(
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::AccessDenied,
        ) => ours("the server refused our client certificate"),
        TlsError::AlertReceived(A::HandshakeFailure) => ours(
            "the server refused the TLS handshake: a client certificate missing or refused, \
             or no protocol version or cipher in common",
        ),
        TlsError::InvalidCertificate(_) | TlsError::NoCertificatesPresented => Some(format!(
            "the server's certificate is not trusted ({tls}); check {}",
            hints.trust
        )),
        TlsError::InconsistentKeys(_) => ours("the client key does not match its certificate"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HINTS: Hints<'static> = Hints {
        trust: "RABBITMQ_CA_FILE",
        identity: "RABBITMQ_CERT_FILE",
    };

    #[test]
    fn a_refused_certificate_is_told_from_a_network_fault_through_io_errors() {
        let alert = TlsError::AlertReceived(AlertDescription::UnknownCA);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, alert);
        let why = certificate_problem(&io, &HINTS).unwrap();
        assert!(why.contains("does not trust the CA"), "{why}");
        assert!(
            why.contains("UnknownCA") && why.contains("RABBITMQ_CERT_FILE"),
            "{why}"
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(certificate_problem(&reset, &HINTS), None);
        let closed = TlsError::AlertReceived(AlertDescription::CloseNotify);
        assert_eq!(certificate_problem(&closed, &HINTS), None);
        let theirs = TlsError::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let why = certificate_problem(&theirs, &HINTS).unwrap();
        assert!(
            why.contains("invalid peer certificate: UnknownIssuer"),
            "{why}"
        );
        assert!(why.contains("RABBITMQ_CA_FILE"), "{why}");
    }

    #[test]
    fn the_debug_of_an_identity_never_shows_the_key() {
        let id = ClientIdentity {
            cert_pem: b"-----BEGIN CERTIFICATE-----".to_vec(),
            key_pem: b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMG\n".to_vec(),
        };
        let shown = format!("{id:?}");
        assert!(
            !shown.contains("MIGHAgEAMBMG") && !shown.contains("PRIVATE"),
            "{shown}"
        );
    }

    #[test]
    fn files_are_checked_and_named_without_their_content() {
        let dir = std::env::temp_dir().join(format!("usync-identity-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nc2VjcmV0\n\
                         -----END ENCRYPTED PRIVATE KEY-----\n";
        std::fs::write(&key, encrypted).unwrap();
        let named = |path, setting| Named { path, setting };
        let missing = ClientIdentity::load(named(&cert, "CERT"), named(&key, "KEY"));
        let why = missing.unwrap_err();
        assert!(
            why.starts_with("CERT ") && why.contains("cannot read"),
            "{why}"
        );
        std::fs::write(&cert, "not a certificate").unwrap();
        let why = ClientIdentity::load(named(&cert, "CERT"), named(&key, "KEY")).unwrap_err();
        assert!(why.contains("no PEM certificate"), "{why}");

        let own = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["client.example.com".into()]).unwrap();
        std::fs::write(&cert, params.self_signed(&own).unwrap().pem()).unwrap();
        let why = ClientIdentity::load(named(&cert, "CERT"), named(&key, "KEY")).unwrap_err();
        assert!(why.contains("no unencrypted private key"), "{why}");
        assert!(!why.contains("c2VjcmV0"), "{why}");
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&key, other.serialize_pem()).unwrap();
        let why = ClientIdentity::load(named(&cert, "CERT"), named(&key, "KEY")).unwrap_err();
        assert!(why.contains("does not belong to the certificate"), "{why}");
        std::fs::write(&key, own.serialize_pem()).unwrap();
        let id = ClientIdentity::load(named(&cert, "CERT"), named(&key, "KEY")).unwrap();
        assert_eq!(id.key_pem, own.serialize_pem().into_bytes());
        let _ = std::fs::remove_dir_all(dir);
    }
}
