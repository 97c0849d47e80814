//! Which addresses the worker and the commands reach: RABBITMQ_ADDRESSES with a dead
//! first node, IPv6 literals in the list and in the URL, the list written as a TOML array,
//! and a bad entry that stops the process at start.

use super::*;
use crate::support::*;

/// With a dead first entry in RABBITMQ_ADDRESSES, the worker and every command that connects
/// reach the next node, and none shows the broker's credentials.
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

/// A malformed RABBITMQ_ADDRESSES entry (no port, a URL) or a zero heartbeat stops the process
/// at start with exit 2, naming the variable and not the credentials.
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

/// An IPv6 literal in RABBITMQ_URL (`amqp://user:pass@[fd00::5]:5672/%2f`, no
/// RABBITMQ_ADDRESSES) is connected to as written, as the one entry of RABBITMQ_ADDRESSES
/// is. (lapin's URL parser takes an IPv6 host for `localhost`: the worker would reach
/// whatever listens there, another broker or nothing, named as a host nobody
/// configured.) The broker is reachable here only through a proxy on 127.0.0.2, named by
/// its IPv4-mapped IPv6 form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_literal_in_rabbitmq_url_is_connected_to_as_written() {
    let proxy = silent_proxy("127.0.0.2:0", Duration::ZERO).await;
    let node = format!("[::ffff:127.0.0.2]:{}", proxy.addr.port());
    let url = amqp().replacen(&broker_addr(), &node, 1);
    assert_ne!(url, amqp());
    // The same literal as the one entry of RABBITMQ_ADDRESSES: reached.
    let listed = Env::new()
        .await
        .set("rabbitmq_addresses", &node)
        .command(&["dlq", "list"]);
    assert_eq!(listed.code, 0, "{}", listed.text());
    // In the URL: not.
    let env = Env::new().await.set("rabbitmq_url", &url);
    let listed = env.command(&["dlq", "list"]);
    assert_eq!(
        listed.code,
        0,
        "the broker at {node} answers, yet: {}",
        listed.text()
    );
}

/// `rabbitmq_addresses` written as a TOML array in the settings file (the natural form of a
/// list of nodes) is read as the list, or refused naming the variable (exit 2), never
/// dropped without a word: dropped, the worker would connect to the URL's host alone,
/// with no failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toml_array_of_addresses_is_read_as_the_list() {
    let env = Env::new()
        .await
        .set("rabbitmq_url", &url_with_another_host());
    let file = std::env::temp_dir().join(format!("{}.toml", env.db.name));
    let dead = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        &file,
        format!("rabbitmq_addresses = [\"{dead}\", \"{}\"]\n", broker_addr()),
    )
    .unwrap();
    let listed = env
        .binary()
        .env("CONFIG_FILE", &file)
        .args(["dlq", "list"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let (code, stderr) = (
        listed.status.code(),
        String::from_utf8_lossy(&listed.stderr).into_owned(),
    );
    assert!(
        code == Some(0) || (code == Some(2) && stderr.contains("RABBITMQ_ADDRESSES")),
        "exit {code:?}: {stderr}"
    );
}

/// An IPv6 entry of RABBITMQ_ADDRESSES (`[::1]:port`) is connected to as such, named
/// `[::1]:port` in the metric, and the commands reach it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_address_in_the_list_is_reached_and_named_with_brackets() {
    let v6 = silent_proxy("[::1]:0", Duration::ZERO).await;
    let v4 = silent_proxy("127.0.0.2:0", Duration::ZERO).await;
    let list = format!(" {} ,[::ffff:127.0.0.2]:{}", v6.addr, v4.addr.port());
    let env = Env::new()
        .await
        .set("rabbitmq_url", &url_with_another_host())
        .set("rabbitmq_addresses", &list);
    let worker = env.start().await;
    assert_eq!(
        address_label(worker.http).await.as_deref(),
        Some(format!("[::1]:{}", v6.addr.port()).as_str())
    );
    let status = env.command(&["status", "--json"]).ok();
    assert_eq!(status.json()["queues"][0]["consumers"], 1);
    worker.stop().await;
}
