//! The worker over mutual TLS to both servers: events published through the broker land
//! in the table; a certificate refused later is retried until a renewed one is on disk; the
//! binary started with a certificate either server refuses exits 2 with a line naming the
//! problem, and no key appears in its output.

use super::nodes::{TlsPostgres, TlsRabbit, USER};
use super::{settings, shown};
use crate::support::{Ca, Dir, KeyForm};
use crate::support::{binary, event, install_test_subscriber, row, run_within, test_log, wait_for};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use user_sync::broker;
use user_sync::settings::Settings;
use user_sync::store::Store;

const QUEUE: &str = "lms_user_events";
const WAIT: Duration = Duration::from_secs(60);

/// The client certificate's files, and what the worker is configured with.
struct Client {
    cert: PathBuf,
    key: PathBuf,
    vars: Vec<(&'static str, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a RabbitMQ node and a Postgres server of its own (scripts/*-tls.sh)"]
async fn a_worker_syncs_over_client_certificates_and_exits_when_one_is_refused() {
    let pki = Ca::new("usync mtls CA");
    let node = TlsRabbit::start(&pki);
    let db = TlsPostgres::start(&pki).await;
    let files = Dir::new("usync-mtls-files");
    let ca = shown(&files.write("ca.pem", &pki.pem()));
    let (cert, key) = files.pair("usync", &pki.client(USER, KeyForm::Sec1));
    let tls = format!(
        "sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
        shown(&cert),
        shown(&key)
    );
    let vars = vec![
        (
            "RABBITMQ_URL",
            format!(
                "amqps://localhost:{}/%2f?auth_mechanism=external",
                node.port
            ),
        ),
        ("RABBITMQ_CA_FILE", ca.clone()),
        ("RABBITMQ_CERT_FILE", shown(&cert)),
        ("RABBITMQ_KEY_FILE", shown(&key)),
        ("DATABASE_URL", db.url(&tls)),
    ];
    let client = Client { cert, key, vars };
    let foreign = Ca::new("some other CA").client(USER, KeyForm::Pkcs8);
    syncs_and_retries_a_renewed_certificate(&node, &client, &foreign).await;

    let (wrong_cert, wrong_key) = files.pair("foreign", &foreign);
    let mut broker_refuses = client.vars.clone();
    broker_refuses[2].1 = shown(&wrong_cert);
    broker_refuses[3].1 = shown(&wrong_key);
    exits_naming(
        &broker_refuses,
        &["does not trust the CA", "RABBITMQ_CERT_FILE"],
    )
    .await;
    let mut db_refuses = client.vars.clone();
    db_refuses[4].1 = db.url(&format!(
        "sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
        shown(&wrong_cert),
        shown(&wrong_key)
    ));
    exits_naming(&db_refuses, &["DATABASE_URL", "does not trust the CA"]).await;
    let mut no_key = client.vars.clone();
    no_key[4].1 = db.url(&tls.replace(&shown(&client.key), "/nonexistent/client.key"));
    exits_naming(&no_key, &["sslkey in DATABASE_URL /nonexistent/client.key"]).await;
}

/// Runs the worker in this process: three events applied; then the certificate on disk
/// is replaced by one the broker refuses and the connection cut: the worker keeps trying
/// (it does not exit), and consumes again once the good files are back.
async fn syncs_and_retries_a_renewed_certificate(
    node: &TlsRabbit,
    client: &Client,
    foreign: &crate::support::Pem,
) {
    if test_log() {
        install_test_subscriber();
    }
    let settings = settings(&client.vars).unwrap();
    let shutdown = CancellationToken::new();
    let app = user_sync::build(settings.clone()).unwrap();
    let worker = tokio::spawn(user_sync::run(app, shutdown.clone()));
    consuming(&settings, 1).await;
    assert!(node.logins().contains(&format!("{USER}\tEXTERNAL")));
    publish(
        &settings,
        &[(1, "user.created", "01"), (2, "user.created", "01")],
    )
    .await;
    publish(&settings, &[(1, "user.deleted", "02")]).await;
    let store = Store::new(&settings).unwrap();
    wait_for("three events applied", WAIT, || async {
        let deleted = row(&store, 1).await.is_some_and(|r| !r.0);
        deleted && row(&store, 2).await.is_some_and(|r| r.0)
    })
    .await;

    let (good_cert, good_key) = (read(&client.cert), read(&client.key));
    std::fs::write(&client.cert, &foreign.cert).unwrap();
    std::fs::write(&client.key, &foreign.key).unwrap();
    node.ctl(&["close_all_connections", "certificate rotation test"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !worker.is_finished(),
        "a refusal after a session keeps retrying"
    );
    std::fs::write(&client.cert, good_cert).unwrap();
    std::fs::write(&client.key, good_key).unwrap();
    consuming(&settings, 1).await;
    shutdown.cancel();
    let ended = tokio::time::timeout(WAIT, worker).await.unwrap().unwrap();
    assert!(ended.is_ok(), "{ended:?}");
}

fn read(path: &PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Waits until the main queue has `n` consumers, looking over a connection of its own.
async fn consuming(settings: &Settings, n: u32) {
    wait_for("worker consuming", WAIT, || async {
        let Ok(conn) = broker::connect(settings).await else {
            return false;
        };
        let counts = broker::queue_counts(&conn, QUEUE).await;
        let _ = conn.close(200, "bye".into()).await;
        matches!(counts, Ok(Some((_, c))) if c == n)
    })
    .await;
}

/// Publishes (user, event type, day of January 2024) to `user_events`, confirmed.
async fn publish(settings: &Settings, events: &[(u8, &str, &str)]) {
    let conn = broker::connect(settings).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for &(user, kind, day) in events {
        let ts = format!("2024-01-{day}T00:00:00Z");
        let body = event(kind, user, &ts, "student", &["lms"]).to_string();
        let props = BasicProperties::default().with_delivery_mode(2);
        let options = BasicPublishOptions::default();
        let confirm = ch
            .basic_publish(
                "user_events".into(),
                kind.into(),
                options,
                body.as_bytes(),
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }
    conn.close(200, "bye".into()).await.unwrap();
}

/// The binary, started with `vars`, exits 2 within a minute, its output holding every
/// one of `named` and nothing of any key file in the directory of the certificates.
async fn exits_naming(vars: &[(&str, String)], named: &[&str]) {
    let mut cmd = binary();
    cmd.env("RUST_LOG", "debug").env("HTTP_ADDR", "127.0.0.1:0");
    cmd.env("SERVICE_NAME", "lms");
    for (var, value) in vars {
        cmd.env(var, value);
    }
    let run = run_within(cmd, WAIT).await;
    let text = run.text();
    assert_eq!(run.code, 2, "{text}");
    for name in named {
        assert!(text.contains(name), "{name}: {text}");
    }
    let dir = PathBuf::from(&vars[2].1);
    for entry in std::fs::read_dir(dir.parent().unwrap()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "key") {
            no_key_in(&text, &std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// No line of `key`'s base64 body appears in `text`, nor the PEM label, nor the bytes of
/// the file as a `Debug` of them would print.
fn no_key_in(text: &str, key: &str) {
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!text.contains(line), "a key line is in the output: {text}");
    }
    let bytes: Vec<String> = key.bytes().take(16).map(|b| b.to_string()).collect();
    assert!(!text.contains(&bytes.join(", ")), "{text}");
}
