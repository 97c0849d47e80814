//! Acknowledgements in delivery order: a later batch that committed first is not
//! acknowledged before the earlier one, an outage or a lost connection hands both back,
//! SIGTERM finishes both, and a connection cut while an ack is pending ends the session.

use super::*;
use crate::support::*;
use sqlx::{Connection, PgConnection};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

/// A later batch that committed first is not acknowledged before the earlier one: killed
/// then, the worker leaves both deliveries in the queue, since an ack covering the later one
/// would have covered the earlier, uncommitted one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_batch_that_committed_first_is_not_acknowledged_before_the_earlier_one() {
    let env = two_in_flight().await;
    let mut child = env
        .binary()
        .env("RUST_LOG", "warn")
        .stdout(unread())
        .spawn()
        .unwrap();
    env.wait_consumers(1, "binary consuming", WAIT).await;
    let p = env.publisher().await;
    let lock = first_waits_second_committed(&env, &p).await;
    child.kill().unwrap();
    child.wait().unwrap();
    // Had the second batch been acknowledged, its `multiple` ack would have covered the
    // first, still uncommitted: both come back.
    wait_depth(
        &env.broker.queue,
        2,
        "both deliveries back in the queue",
        WAIT,
    )
    .await;
    lock.release().await;
}

/// An outage past the hold hands both batches in flight back to the queue, none acknowledged
/// twice, and once the database returns both apply; nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_hold_hands_both_batches_back_and_loses_nothing() {
    let env = two_in_flight().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    let lock = first_waits_second_committed(&env, &p).await;
    // The outage: no new connection, and the worker's own cut (the test's lock stays, so
    // the first batch cannot slip through between the two).
    let mut admin = PgConnection::connect(&format!("{}/postgres", pg()))
        .await
        .unwrap();
    for sql in [
        format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", env.db.name),
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' \
             AND application_name = 'user-sync' AND pid <> {}",
            env.db.name, lock.pid
        ),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.unwrap();
    }
    // Held for 20 s, then the session ends: both deliveries back, none acknowledged twice.
    let queue = env.broker.queue.clone();
    wait_for(
        "both batches handed back",
        Duration::from_secs(60),
        || async { queue_counts(&queue).await == Some((2, 0)) },
    )
    .await;
    lock.release().await;
    set_connections(&env.db.name, true).await;
    wait_for("the first batch applied", WAIT, || async {
        stands_on(&env, 1, LATER).await
    })
    .await;
    wait_depth(&queue, 0, "queue drained", WAIT).await;
    assert!(
        env.dead_letters().await.is_empty(),
        "an outage dead-letters nothing"
    );
    worker.stop().await;
}

/// SIGTERM with two batches in flight finishes both and acknowledges both before it exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_and_acknowledges_both_batches_in_flight() {
    let env = two_in_flight().await;
    let mut child = env
        .binary()
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    env.wait_consumers(1, "binary consuming", WAIT).await;
    let p = env.publisher().await;
    let lock = first_waits_second_committed(&env, &p).await;
    sigterm(&child);
    tokio::time::timeout(WAIT, async {
        while let Some(line) = rx.recv().await {
            if line.contains("shutdown requested") {
                return;
            }
        }
    })
    .await
    .expect("the shutdown is logged");
    lock.release().await;
    assert!(child.wait().unwrap().success(), "exit 0 after the drain");
    assert!(
        stands_on(&env, 1, LATER).await,
        "the first batch was finished"
    );
    let queue = env.broker.queue.clone();
    assert_eq!(
        queue_counts(&queue).await.map(|c| c.0),
        Some(0),
        "both batches acknowledged, none returned"
    );
}

/// A broker connection lost with two batches in flight redelivers both: the committed one
/// comes back as stale, the waiting one applies, nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_connection_lost_with_two_batches_in_flight_redelivers_both() {
    let proxy = BrokerProxy::start().await;
    let env = two_in_flight().await.set("rabbitmq_url", &proxy.url());
    let worker = env.start().await;
    let p = env.publisher().await;
    let lock = first_waits_second_committed(&env, &p).await;
    proxy.close().await;
    env.wait_consumers(0, "the session gone", WAIT).await;
    proxy.reopen();
    env.wait_consumers(1, "consuming again", WAIT).await;
    // Redelivered and applied again: stale, since it committed before the loss.
    wait_for("the second batch redelivered", WAIT, || async {
        let (_, metrics) = http_get(worker.http, "/metrics").await;
        metrics
            .lines()
            .filter_map(|l| l.strip_prefix("user_sync_events_total{outcome=\"stale\"} "))
            .any(|n| n.parse::<f64>().is_ok_and(|n| n >= 1.0))
    })
    .await;
    lock.release().await;
    wait_for("the first batch applied", WAIT, || async {
        stands_on(&env, 1, LATER).await
    })
    .await;
    wait_depth(&env.broker.queue, 0, "queue drained", WAIT).await;
    assert!(env.dead_letters().await.is_empty());
    worker.stop().await;
}

/// The broker connection cut again and again while batches are in flight, the worker
/// behind a proxy: a cut while the consume loop awaits a batch's ack ends the session
/// (the ack is awaited 5 s at most), and the worker consumes again and drains the queue.
/// lapin may never resolve that ack; awaited without a bound, the loop would stand still
/// for good, deaf to the lost connection and to shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_while_an_ack_is_pending_ends_the_session() {
    let proxy = BrokerProxy::start().await;
    let env = Env::new()
        .await
        .set("batch_size", "3")
        .set("pipeline_depth", "3")
        .set("rabbitmq_url", &proxy.url());
    let store = env.store();
    store.migrate().await.unwrap();
    refusing_trigger(&store).await;
    let worker = env.start().await;
    let p = env.publisher().await;
    for round in 0..6u32 {
        for n in 0..60u32 {
            let user = (n % 50 + 1) as u8;
            let ts = format!("2024-01-01T00:{round:02}:{:02}Z", n % 60);
            let mut e = event("user.updated", user, &ts, "student", &["lms"]);
            if n % 7 == 0 {
                e["user"]["first_name"] = "Refused".into();
            }
            p.publish_json(&e).await;
            if n == 30 {
                proxy.close().await;
                proxy.reopen();
            }
        }
        env.wait_consumers(1, "consuming again", WAIT).await;
    }
    wait_depth(&env.broker.queue, 0, "queue drained", WAIT).await;
    worker.stop().await;
}
