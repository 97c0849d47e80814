//! The brake with batches in flight: it decides in delivery order, and releases while an
//! earlier batch is unacknowledged apply each deactivation once.

use super::*;
use crate::support::*;

/// The brake deciding with three batches in flight, the first held up on a row lock and
/// not acknowledged: of six deactivations in delivery order the first two pass (the first
/// held alone, however the rest are cut) and the rest are parked; `brake release` runs
/// twice while the first batch is still unacknowledged; in the end every deactivation is
/// applied exactly once and nothing stays parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brake_decides_in_delivery_order_and_a_double_release_mid_flight_applies_each_once() {
    let env = Env::new()
        .await
        .set("batch_size", "2")
        .set("pipeline_depth", "3")
        .set("deactivation_brake", "2");
    let worker = env.start().await;
    let p = env.publisher().await;
    for u in 1..=6u8 {
        p.create_student(u, &["lms"]).await;
    }
    let store = env.store();
    let inactive = |u: u8| {
        let store = store.clone();
        async move { row(&store, u).await.is_some_and(|r| !r.0) }
    };
    wait_for("six users", WAIT, || async {
        count(&store, "SELECT count(*) FROM users WHERE is_active").await == 6
    })
    .await;
    let lock = RowLock::take(&env, 1).await;
    // User 1's deactivation alone in the first batch, held on the lock before the rest is
    // published: cut together with user 2's, user 2 would wait on the lock as well.
    p.send("user.deleted", 1, "2024-01-02T00:00:00Z", "student", &[])
        .await;
    wait_for("the first batch waiting on the lock", WAIT, || async {
        lock_waits(&env).await >= 1
    })
    .await;
    for u in 2..=6u8 {
        p.send("user.deleted", u, "2024-01-02T00:00:00Z", "student", &[])
            .await;
    }
    let hold = env.hold();
    wait_for("users 3 to 5 parked", WAIT, || async {
        queue_counts(&hold).await.is_some_and(|c| c.0 >= 3)
    })
    .await;
    assert!(inactive(2).await, "the second deactivation passed");
    for u in 3..=6 {
        assert!(!inactive(u).await, "user {u} parked or waiting");
    }
    let settings = env.settings();
    let first = user_sync::ops::brake::release(&settings).await.unwrap();
    let second = user_sync::ops::brake::release(&settings).await.unwrap();
    assert!(first.moved >= 3, "{first:?}");
    lock.release().await;
    wait_depth(&env.broker.queue, 0, "queue drained", WAIT).await;
    // User 6, cut after the first batch was acknowledged, may have been parked since.
    if queue_counts(&hold).await.is_some_and(|c| c.0 > 0) {
        user_sync::ops::brake::release(&settings).await.unwrap();
    }
    for u in 1..=6 {
        wait_for("deactivated", WAIT, || inactive(u)).await;
    }
    wait_depth(&env.broker.queue, 0, "queue drained", WAIT).await;
    let (_, metrics) = http_get(worker.http, "/metrics").await;
    let deactivated = metrics
        .lines()
        .find_map(|l| l.strip_prefix("user_sync_events_total{outcome=\"deactivated\"} "))
        .map(|n| n.parse::<f64>().unwrap());
    assert_eq!(deactivated, Some(6.0), "each applied once ({second:?})");
    assert_eq!(queue_counts(&hold).await.map(|c| c.0), Some(0));
    worker.stop().await;
}
