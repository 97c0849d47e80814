//! user-sync's broker connection with client certificates, against a node that asks for
//! one (`verify_peer`, `fail_if_no_peer_cert`) and logs in by it (EXTERNAL, CN).

use super::nodes::{PASSWORD_USER, TlsRabbit, USER};
use super::{settings, shown};
use crate::support::{Ca, Dir, KeyForm};
use user_sync::broker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a RabbitMQ node of its own (scripts/rabbitmq-tls.sh)"]
async fn client_certificates_log_in_and_bad_ones_are_refused_naming_the_problem() {
    let pki = Ca::new("usync mtls CA");
    let node = TlsRabbit::start(&pki);
    let files = Dir::new("usync-mtls-files");
    logins_in_every_key_form(&node, &pki, &files).await;
    refusals(&node, &pki, &files).await;
}

/// EXTERNAL with the files in variables, EXTERNAL with the RabbitMQ URI spec's query
/// parameters, and a password: each key form once.
async fn logins_in_every_key_form(node: &TlsRabbit, pki: &Ca, files: &Dir) {
    let ca = shown(&files.write("ca.pem", &pki.pem()));
    let base = format!("amqps://localhost:{}/%2f", node.port);
    let (cert, key) = files.pair("pkcs8", &pki.client(USER, KeyForm::Pkcs8));
    let vars = [
        ("RABBITMQ_URL", format!("{base}?auth_mechanism=external")),
        ("RABBITMQ_CA_FILE", ca.clone()),
        ("RABBITMQ_CERT_FILE", shown(&cert)),
        ("RABBITMQ_KEY_FILE", shown(&key)),
    ];
    logs_in(node, &vars, &format!("{USER}\tEXTERNAL")).await;

    let (cert, key) = files.pair("pkcs1", &pki.client(USER, KeyForm::Pkcs1));
    let url = format!(
        "{base}?auth_mechanism=external&cacertfile={ca}&certfile={}&keyfile={}",
        shown(&cert),
        shown(&key)
    );
    logs_in(node, &[("RABBITMQ_URL", url)], &format!("{USER}\tEXTERNAL")).await;

    let (cert, key) = files.pair("sec1", &pki.client(USER, KeyForm::Sec1));
    let url = format!(
        "amqps://{PASSWORD_USER}:{}@localhost:{}/%2f",
        node.password, node.port
    );
    let vars = [
        ("RABBITMQ_URL", url),
        ("RABBITMQ_CA_FILE", ca),
        ("RABBITMQ_CERT_FILE", shown(&cert)),
        ("RABBITMQ_KEY_FILE", shown(&key)),
    ];
    logs_in(node, &vars, &format!("{PASSWORD_USER}\tPLAIN")).await;
}

/// Connects with `vars`; the node lists the connection as `login` (user, mechanism).
async fn logs_in(node: &TlsRabbit, vars: &[(&str, String)], login: &str) {
    let settings = settings(vars).unwrap();
    let connection = broker::connect(&settings)
        .await
        .unwrap_or_else(|e| panic!("{login}: {e}"));
    let logins = node.logins();
    assert!(logins.lines().any(|l| l == login), "{login}: {logins}");
    connection.close(200, "bye".into()).await.unwrap();
}

/// No certificate, one from another CA, one whose CN is no user, a key of another
/// certificate, a key file missing: each refused, saying which.
async fn refusals(node: &TlsRabbit, pki: &Ca, files: &Dir) {
    let ca = shown(&files.write("ca.pem", &pki.pem()));
    let external = format!(
        "amqps://localhost:{}/%2f?auth_mechanism=external",
        node.port
    );
    let password = format!(
        "amqps://{PASSWORD_USER}:{}@localhost:{}/%2f",
        node.password, node.port
    );
    let none = [
        ("RABBITMQ_URL", password.clone()),
        ("RABBITMQ_CA_FILE", ca.clone()),
    ];
    refused(&none, "requires a client certificate", node).await;

    let stranger = Ca::new("some other CA");
    let (cert, key) = files.pair("foreign", &stranger.client(USER, KeyForm::Pkcs8));
    let with = |url: &str, cert: &str, key: &str| {
        [
            ("RABBITMQ_URL", url.to_string()),
            ("RABBITMQ_CA_FILE", ca.clone()),
            ("RABBITMQ_CERT_FILE", cert.to_string()),
            ("RABBITMQ_KEY_FILE", key.to_string()),
        ]
    };
    let foreign = with(&external, &shown(&cert), &shown(&key));
    refused(&foreign, "does not trust the CA", node).await;

    let (cert, nobodys) = files.pair("nobody", &pki.client("nobody", KeyForm::Pkcs8));
    let unknown = with(&external, &shown(&cert), &shown(&nobodys));
    refused(&unknown, "login refused", node).await;

    let (own, _) = files.pair("own", &pki.client(USER, KeyForm::Pkcs8));
    let mismatched = with(&password, &shown(&own), &shown(&nobodys));
    refused(&mismatched, "does not belong to the certificate", node).await;
    let missing = with(&password, &shown(&own), "/nonexistent/client.key");
    refused(
        &missing,
        "RABBITMQ_KEY_FILE /nonexistent/client.key: cannot read",
        node,
    )
    .await;
}

/// Connecting with `vars` fails as a refusal whose message holds `why`, and neither a
/// password nor a key.
async fn refused(vars: &[(&str, String)], why: &str, node: &TlsRabbit) {
    let settings = settings(vars).unwrap();
    let error = broker::connect(&settings).await.expect_err(why);
    let text = error.to_string();
    eprintln!("refused: {text}");
    assert!(error.is_refusal(), "{why}: {text}");
    assert!(text.contains(why), "{why}: {text}");
    assert!(!text.contains(&node.password), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}
