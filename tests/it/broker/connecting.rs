//! Connecting and staying connected: nodes that hang up or stay silent are passed over
//! and let go of, every node down leaves the worker alive but not ready, and heartbeats
//! keep a session through a long batch.

use super::*;
use crate::support::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// A node that accepts TCP and then says nothing (frozen, SIGSTOPped: its kernel still
/// accepts) costs one CONNECT_TIMEOUT, after which the next address is tried and the
/// attempt given up on is closed: no connection to the silent node stays open. Otherwise
/// every round that reaches a silent node leaves a socket and a lapin I/O thread behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_timeout_closes_the_abandoned_connection() {
    let frozen = silent_proxy("127.0.0.1:0", Duration::from_secs(40)).await;
    let env = Env::new()
        .await
        .set("rabbitmq_url", &url_with_another_host())
        .set(
            "rabbitmq_addresses",
            &format!("{},{}", frozen.addr, broker_addr()),
        );
    let worker = env.start().await; // after the 10 s timeout on the frozen node
    assert_eq!(
        address_label(worker.http).await.as_deref(),
        Some(broker_addr().as_str())
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let open = frozen.open.load(Ordering::SeqCst);
    worker.stop().await;
    assert_eq!(
        open, 0,
        "connections to the frozen node still open after the attempt was given up"
    );
}

/// A node that accepts TCP and hangs up before the AMQP handshake (a listener with nothing
/// behind it, a node shutting down) is passed over at once, not after a connect timeout,
/// by the worker and by `send`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_hangs_up_before_the_handshake_is_passed_over_at_once() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let env = Env::new()
        .await
        .set("rabbitmq_url", &url_with_another_host())
        .set(
            "rabbitmq_addresses",
            &format!("{},{}", hanging, broker_addr()),
        );
    let started = Instant::now();
    let worker = env.start().await;
    let took = started.elapsed();
    assert_eq!(
        address_label(worker.http).await.as_deref(),
        Some(broker_addr().as_str())
    );
    let id = uid(3).to_string();
    let mut send = env.binary();
    send.args([
        "send",
        "--type",
        "created",
        "--email",
        "x@example.com",
        "--role",
        "teacher",
        "--user-id",
        &id,
    ]);
    // Well under the 10 s a connect timeout would cost, with room for a loaded machine.
    let bound = Duration::from_secs(8);
    let started = Instant::now();
    let sent = run_bounded(send, bound).await;
    let send_took = started.elapsed();
    worker.stop().await;
    assert!(took < bound, "consuming after {took:?}");
    let sent = sent.unwrap_or_else(|| panic!("send still running after {send_took:?}"));
    assert_eq!(sent.code, 0, "{}", sent.text());
}

/// Every node down, one refusing connections and one accepting TCP and then silent (a
/// connect timeout each round): /readyz says the broker is why it is not ready, /healthz
/// stays 200 (a broker outage must not get the pod restarted; the rounds and the backoff
/// tick the watchdog, here with HEALTH_STALL_SECS at its 2 s minimum), and once a node
/// answers again the worker consumes through it without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_down_keeps_it_alive_but_not_ready_until_one_returns() {
    let silent = silent_proxy("127.0.0.1:0", Duration::from_secs(3600)).await;
    let returning = free_port();
    let env = Env::new()
        .await
        .set("rabbitmq_url", &url_with_another_host())
        .set(
            "rabbitmq_addresses",
            &format!("127.0.0.1:{returning},{}", silent.addr),
        )
        .set("health_stall_secs", "2");
    let worker = Worker::spawn(env.settings());
    let http = worker.http;
    let until = Instant::now() + Duration::from_secs(14);
    while Instant::now() < until {
        let (live, _) = http_get(http, "/healthz").await;
        let (ready, why) = http_get(http, "/readyz").await;
        assert_eq!(live, 200, "liveness during the outage");
        assert_eq!(ready, 503, "{why}");
        assert!(why.contains("broker"), "{why}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let back = silent_proxy(&format!("127.0.0.1:{returning}"), Duration::ZERO).await;
    let ready = within(Duration::from_secs(45), || async {
        http_get(http, "/readyz").await.0 == 200
    })
    .await;
    assert!(ready, "consuming again once a node answered");
    assert_eq!(
        address_label(http).await.as_deref(),
        Some(back.addr.to_string().as_str())
    );
    worker.stop().await;
}

/// With 2 s heartbeats, a batch that waits 20 s on a table lock keeps its broker
/// connection (lapin's heartbeats run apart from the consume loop that waits for the
/// batch): no reconnect, and the event is applied once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waiting_20_s_on_a_lock_keeps_its_connection_with_2_s_heartbeats() {
    let env = Env::new().await.set("rabbitmq_heartbeat_secs", "2");
    let worker = env.start().await;
    let store = env.store();
    let mut locker = store.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(reconnects(worker.http).await, 0, "the session survived");
    locker.rollback().await.unwrap();
    wait_for("applied after the lock", WAIT, || async {
        row(&store, 1).await.is_some()
    })
    .await;
    assert_eq!(reconnects(worker.http).await, 0);
    worker.stop().await;
}
