//! A TLS-terminating proxy in front of the local broker, presenting a certificate of a
//! test's CA, and that CA's file.

use super::Ca;
use super::broker_addr;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// Starts the proxy: TLS with a `localhost` certificate signed by `ca`, forwarding to the
/// broker of `TEST_RABBITMQ_URL`. Returns its port.
pub(crate) async fn tls_proxy(ca: &Ca) -> u16 {
    let (leaf, key) = ca.server_der();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.into()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let broker = broker_addr();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (acceptor, broker) = (acceptor.clone(), broker.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                if let Ok(mut broker) = tokio::net::TcpStream::connect(broker).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                }
            });
        }
    });
    port
}

pub(crate) fn write_pem(ca: &Ca) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("usync-ca-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&path, ca.pem()).unwrap();
    path
}
