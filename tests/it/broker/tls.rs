//! AMQP over TLS: a TLS-terminating proxy on 127.0.0.1, with a certificate made for the
//! test, in front of the local broker. user-sync trusts it through RABBITMQ_CA_FILE,
//! refuses it with another CA saying why, and checks each address's own host.

use super::*;
use crate::support::*;

/// amqps through a TLS proxy is trusted with the CA of RABBITMQ_CA_FILE and refused with
/// another CA, the refusal naming the certificate and not the credentials; an unreadable CA
/// file names RABBITMQ_CA_FILE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_through_a_tls_proxy_with_the_right_ca_and_not_with_another() {
    let trusted = Ca::new("user-sync test CA");
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

    let other = write_pem(&Ca::new("some other CA"));
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

/// amqps with RABBITMQ_ADDRESSES checks each node's certificate against the address's own
/// host, not the URL's: a `localhost` certificate is accepted at `localhost:port` whatever
/// the URL names, and refused at `127.0.0.1:port` even when the URL's host is
/// `localhost` (as the README says), without showing the credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_addresses_checks_the_address_host_not_the_urls() {
    let ca = Ca::new("addresses CA");
    let port = tls_proxy(&ca).await;
    let pem = write_pem(&ca);
    let creds = broker_credentials();
    let env = Env::new()
        .await
        .set(
            "rabbitmq_url",
            &format!("amqps://{creds}@ignored.invalid:5671/%2f"),
        )
        .set("rabbitmq_ca_file", pem.to_str().unwrap())
        .set("rabbitmq_addresses", &format!("localhost:{port}"));
    let worker = env.start().await;
    assert_eq!(
        address_label(worker.http).await.as_deref(),
        Some(format!("localhost:{port}").as_str())
    );
    worker.stop().await;

    let by_ip = Env::new()
        .await
        .set(
            "rabbitmq_url",
            &format!("amqps://{creds}@localhost:{port}/%2f"),
        )
        .set("rabbitmq_ca_file", pem.to_str().unwrap())
        .set("rabbitmq_addresses", &format!("127.0.0.1:{port}"));
    let refused = by_ip.command_within(&["dlq", "list"], WAIT).await;
    assert_eq!(refused.code, 1, "{}", refused.text());
    assert!(refused.text().contains("certificate"), "{}", refused.text());
    assert!(!refused.text().contains(&creds), "{}", refused.text());
    let _ = std::fs::remove_file(pem);
}
