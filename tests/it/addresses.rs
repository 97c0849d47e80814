//! `RABBITMQ_ADDRESSES` against the local broker: a list whose first node is down still
//! reaches the broker, for the worker and for every command that connects; a bad entry
//! stops the process at start. The failover itself is tested on a cluster (`cluster/`).

use crate::helpers::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// `TEST_RABBITMQ_URL` with its host replaced by one that does not resolve.
fn url_with_another_host() -> String {
    let url = amqp();
    let other = url.replacen(&broker_addr(), "ignored.invalid:5672", 1);
    assert_ne!(url, other, "TEST_RABBITMQ_URL names host:port");
    other
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_address_is_passed_over_by_the_worker_and_the_commands() {
    let dead = format!("127.0.0.1:{}", free_port());
    let env = Env::new()
        .await
        .set("rabbitmq_url", &url_with_another_host())
        .set("rabbitmq_addresses", &format!("{dead}, {}", broker_addr()));
    let worker = env.start().await;
    let (_, metrics) = http_get(worker.http, "/metrics").await;
    let node = format!(
        "user_sync_broker_address{{address=\"{}\"}} 1",
        broker_addr()
    );
    assert!(metrics.contains(&node), "{metrics}");
    assert!(!metrics.contains(&broker_credentials()));

    let sent = env.command(&[
        "send",
        "--type",
        "created",
        "--email",
        "listed@example.com",
        "--role",
        "teacher",
        "--user-id",
        &uid(7).to_string(),
    ]);
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    let store = env.store();
    wait_for("the sent event applied", WAIT, || async {
        row(&store, 7).await.is_some()
    })
    .await;
    let status = env.command(&["status", "--json"]).ok();
    assert_eq!(
        status.json()["queues"][0]["consumers"],
        1,
        "{}",
        status.stdout
    );
    for args in [&["dlq", "list"][..], &["brake", "status"]] {
        let run = env.command(args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.text());
        assert!(!run.text().contains(&broker_credentials()), "{args:?}");
    }
    worker.stop().await;
}

#[test]
fn a_bad_address_or_heartbeat_is_a_configuration_error() {
    for (var, value) in [
        ("RABBITMQ_ADDRESSES", "127.0.0.1:5672,rabbit-2"),
        ("RABBITMQ_ADDRESSES", "amqp://guest:guest@rabbit-1:5672"),
        ("RABBITMQ_HEARTBEAT_SECS", "0"),
    ] {
        let out = run(binary()
            .args(["status"])
            .env("SERVICE_NAME", "lms")
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x")
            .env(var, value));
        assert_eq!(out.code, 2, "{var}={value}: {}", out.text());
        assert!(out.stderr.contains(var), "{}", out.stderr);
        assert!(!out.stderr.contains("guest:guest"), "{}", out.stderr);
    }
}
