//! AMQP over TLS: a TLS-terminating proxy on 127.0.0.1, with a certificate made for the
//! test, in front of the local broker. user-sync trusts it through RABBITMQ_CA_FILE, and
//! refuses it, saying why, with another CA.

use crate::helpers::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

pub(crate) struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

pub(crate) fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    Ca {
        cert: params.self_signed(&key).unwrap(),
        key,
    }
}

/// Starts the proxy: TLS with a `localhost` certificate signed by `ca`, forwarding to the
/// broker of `TEST_RABBITMQ_URL`. Returns its port.
pub(crate) async fn tls_proxy(ca: &Ca) -> u16 {
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca.cert, &ca.key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
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
    std::fs::write(&path, ca.cert.pem()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_through_a_tls_proxy_with_the_right_ca_and_not_with_another() {
    let trusted = ca("user-sync test CA");
    let port = tls_proxy(&trusted).await;
    let good = write_pem(&trusted);
    let url = format!("amqps://{}@localhost:{port}/%2f", broker_credentials());
    let env = Env::new()
        .await
        .set("rabbitmq_url", &url)
        .set("rabbitmq_ca_file", good.to_str().unwrap());
    let worker = env.start().await;
    env.publisher().await.create_student(1, &["lms"]).await;
    let store = env.store();
    wait_for("applied over TLS", Duration::from_secs(20), || async {
        row(&store, 1).await.is_some()
    })
    .await;
    worker.stop().await;

    let other = write_pem(&ca("some other CA"));
    let wrong = Env {
        overrides: [
            ("rabbitmq_url".to_string(), url.clone()),
            (
                "rabbitmq_ca_file".to_string(),
                other.to_str().unwrap().to_string(),
            ),
        ]
        .into(),
        ..env
    };
    let Err(err) = user_sync::broker::connect(&wrong.settings()).await else {
        panic!("a certificate from an unknown CA is refused");
    };
    let why = err.to_string();
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    assert!(!why.contains(&broker_credentials()), "{why}");
    let missing = Env {
        overrides: [
            ("rabbitmq_url".to_string(), url),
            (
                "rabbitmq_ca_file".to_string(),
                "/nonexistent/ca.pem".to_string(),
            ),
        ]
        .into(),
        ..wrong
    };
    let err = user_sync::broker::connect(&missing.settings())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("RABBITMQ_CA_FILE"), "{err}");
    for path in [good, other] {
        let _ = std::fs::remove_file(path);
    }
}

/// Postgres TLS through the URL: `verify-full` against the local server's own (snakeoil,
/// self-signed, for `localhost`) certificate as the root, and a refusal with another CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_through_sslmode_and_sslrootcert() {
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    if !std::path::Path::new(snakeoil).exists() {
        eprintln!("skipped: the local Postgres has no snakeoil certificate");
        return;
    }
    let env = Env::new().await;
    let by_name = env.db.url().replace("127.0.0.1", "localhost");
    let url = format!("{by_name}?sslmode=verify-full&sslrootcert={snakeoil}");
    let tls = Env {
        overrides: [("database_url".to_string(), url)].into(),
        ..env
    };
    let store = tls.store();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(encrypted, "the connection is TLS");
    store.pool().close().await;

    let other = write_pem(&ca("some other CA"));
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        tls.db.url().replace("127.0.0.1", "localhost"),
        other.display()
    );
    let wrong = Env {
        overrides: [("database_url".to_string(), url)].into(),
        ..tls
    };
    let err = wrong.store().ping().await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let _ = std::fs::remove_file(other);
}
