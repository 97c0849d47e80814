//! The brake belongs to the queue, not to a replica: replicas share one window and one
//! engagement, and a stuck replica holds none of them up.

use super::*;
use crate::support::*;
use sqlx::Connection;
use std::time::Duration;

/// Two replicas on one queue share one window: together they apply at most DEACTIVATION_BRAKE
/// deactivations, and one release applies every held one exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_window_and_a_release_applies_every_held_deactivation_once() {
    let env = Env::new()
        .await
        .set("deactivation_brake", "50")
        .set("prefetch", "20")
        .set("batch_size", "10");
    let (one, two) = (env.start().await, env.start().await);
    env.wait_consumers(2, "two consumers", WAIT).await;
    let p = env.publisher().await;
    // One window for the queue: the two replicas together apply at most 50 deletions
    // before the brake holds (not 50 each, 100 in all, as if each counted its own).
    let held = delete_until_settled(&env, &p, 200).await;
    assert!(held >= 150, "two replicas applied {} of 200", 200 - held);
    assert_eq!(release_within(&env).await, (held, 0));
    all_applied_once(&env, held).await;
    one.stop().await;
    two.stop().await;
}

/// Once one replica engaged the brake (its `brake_log` entry), another replica that saw
/// no deactivation in the window holds its deactivations too, even after the window has
/// passed: one replica alone would hold every deactivation until `brake release`, and so
/// must two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brake_engaged_by_one_replica_holds_deactivations_on_the_other() {
    let env = Env::new()
        .await
        .set("deactivation_brake", "2")
        .set("deactivation_brake_window_s", "1");
    let b = env.start().await;
    let p = env.publisher().await;
    let store = env.store();
    create_all(&env, &p, &[1]).await;
    // What replica A writes when it engages (`Brake::engage`).
    store
        .brake_engaged(2, "more than 2 deactivations within 1 s")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // the window has passed
    p.delete(1, "2024-02-01T00:00:00Z").await;
    let hold = env.hold();
    wait_for("the deletion held or applied", WAIT, || async {
        row(&store, 1).await.is_some_and(|r| !r.0)
            || queue_counts(&hold).await.is_some_and(|(n, _)| n > 0)
    })
    .await;
    assert!(
        row(&store, 1).await.is_some_and(|r| r.0),
        "replica B deactivated user 1 while the queue's brake was engaged"
    );
    b.stop().await;
}

/// A replica stuck holding the brake window's lock (a network partition, a frozen node:
/// Postgres notices only through TCP keepalives, hours by default) does not stall the
/// others: their admission gives up after its lock timeout and holds the batch's
/// deactivations, and the events behind them flow. Here the stuck replica is a session
/// that took the lock and went idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stuck_holding_the_window_lock_does_not_stall_the_queue() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    let store = env.store();
    create_all(&env, &p, &[1]).await;
    let mut stuck = sqlx::PgConnection::connect(&env.db.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut stuck).await.unwrap();
    sqlx::query("LOCK TABLE user_sync.brake_window IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut stuck)
        .await
        .unwrap();
    p.delete(1, "2024-02-01T00:00:00Z").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.create_student(2, &["lms"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    let mut applied = false;
    while tokio::time::Instant::now() < deadline {
        if row(&store, 2).await.is_some() {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (health, _) = http_get(worker.http, "/healthz").await;
    let _ = sqlx::query("ROLLBACK").execute(&mut stuck).await;
    let _ = stuck.close().await;
    assert!(
        applied,
        "user 2's creation waited 25 s behind the brake window's lock (/healthz {health})"
    );
    worker.stop().await;
}
