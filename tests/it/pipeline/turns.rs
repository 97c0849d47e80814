//! Users and emails a batch before is still applying: the next batch waits its turn for
//! those, goes at once for the others, and never deadlocks with it.

use super::*;
use crate::support::*;
use sqlx::{Connection, PgConnection};
use std::time::Duration;

/// Two batches naming the same 200 users, arriving in opposite orders, applied at once
/// again and again: the watermark guard locks users in id order whatever the arrival
/// order, so neither ever waits on the other in a cycle. A deadlock would be retried at
/// once and converge anyway; Postgres's own count says whether one happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_batches_of_the_same_users_at_once_never_deadlock() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let rounds = 15;
    for round in 0..rounds {
        let batch = |second: u32| {
            let mut events: Vec<_> = (1..=200u8)
                .map(|u| {
                    let ts = format!("2024-01-01T00:{round:02}:{second:02}Z");
                    planned(&event("user.updated", u, &ts, "student", &["lms"]))
                })
                .collect();
            if second == 1 {
                events.reverse();
            }
            events
        };
        let (a, b) = (batch(0), batch(1));
        let apply = |events: &Vec<user_sync::decide::Planned>| {
            let (users, _) = user_sync::decide::reduce(events);
            let store = store.clone();
            let events = events.clone();
            async move { store.apply(&events, &users).await.unwrap() }
        };
        tokio::join!(apply(&a), apply(&b));
    }
    // Backends report their counts at exit: close the pool, then wait for the commits to
    // show before reading the deadlocks.
    store.pool().close().await;
    let mut admin = PgConnection::connect(&format!("{}/postgres", pg()))
        .await
        .unwrap();
    let stats = format!(
        "SELECT xact_commit, deadlocks FROM pg_stat_database WHERE datname = '{}'",
        env.db.name
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let deadlocks = loop {
        let _ = sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut admin)
            .await;
        let (commits, deadlocks): (i64, i64) =
            sqlx::query_as(&stats).fetch_one(&mut admin).await.unwrap();
        if commits >= 2 * rounds {
            break deadlocks;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backends' counts never showed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        deadlocks, 0,
        "deadlocks between two batches of the same users"
    );
}

/// The later batch names user 1, which the earlier one is still applying (it waits on the
/// test's row lock), and user 2, which no batch before it names: user 2 is applied at
/// once, and user 1 waits in the worker for the earlier batch, not on its row lock (where
/// it would hold user 2 back too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_the_batch_before_is_applying_wait_their_turn_and_the_others_go_at_once() {
    // Two deliveries a batch, and time enough to gather them behind a batch in flight.
    let env = Env::new()
        .await
        .set("batch_size", "2")
        .set("batch_max_wait_ms", "5000")
        .set("pipeline_depth", "2");
    let worker = env.start().await;
    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    wait_row(&env, 1).await;
    let lock = RowLock::take(&env, 1).await;
    p.update(1, LATER).await;
    wait_blocked(&env).await;
    let latest = "2024-01-03T00:00:00Z";
    p.update(1, latest).await;
    p.create_student(2, &["lms"]).await;
    wait_row(&env, 2).await;
    assert_eq!(
        lock_waits(&env).await,
        1,
        "only the earlier batch waits on the row lock"
    );
    lock.release().await;
    wait_for("user 1 at its latest event", WAIT, || async {
        stands_on(&env, 1, latest).await
    })
    .await;
    wait_depth(&env.broker.queue, 0, "queue drained", WAIT).await;
    worker.stop().await;
}

/// User 1 renames away from an email and user 2 takes it in the next batch while the
/// first is still applying (a slow trigger): user 2 gets the email, as in delivery order
/// at depth 1. A user that meets an email conflict while an earlier batch may still be
/// applying waits for it and is tried again after it; retried through the tiers instead,
/// it could run out of attempts before that batch commits and be dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_freed_by_a_batch_still_applying_is_taken_by_the_next_without_a_conflict() {
    let env = Env::new()
        .await
        .set("batch_size", "1")
        .set("pipeline_depth", "3")
        .set("max_attempts", "2");
    let store = env.store();
    store.migrate().await.unwrap();
    slow_trigger(&env, "users", "first_name").await;
    let worker = env.start().await;
    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    p.create_student(2, &["lms"]).await;
    wait_for("two users", WAIT, || async {
        count(&store, "SELECT count(*) FROM users").await == 2
    })
    .await;
    let advisory = Advisory::take(&env).await;
    let mut rename = event(
        "user.updated",
        1,
        "2024-01-02T00:00:00Z",
        "student",
        &["lms"],
    );
    rename["user"]["email"] = "renamed@example.com".into();
    rename["user"]["first_name"] = "Slow".into();
    p.publish_json(&rename).await;
    wait_for("the rename waiting in the trigger", WAIT, || async {
        lock_waits(&env).await == 1
    })
    .await;
    p.publish_json(&taking_email_of(2, 1, "2024-01-03T00:00:00Z"))
        .await;
    // Met as a conflict, the rename would be dead-lettered within a blink; held back, it
    // is not.
    let dlq = env.dlq();
    let dead = tokio::time::timeout(Duration::from_secs(3), async {
        while queue_counts(&dlq).await.is_none_or(|c| c.0 == 0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok();
    advisory.release().await;
    assert!(!dead, "user 2's rename dead-lettered as an email conflict");
    wait_for("user 2 has user 1's former email", WAIT, || async {
        row(&store, 2)
            .await
            .is_some_and(|r| r.2.as_deref() == Some("user1@example.com"))
    })
    .await;
    wait_depth(&env.broker.queue, 0, "queue drained", WAIT).await;
    worker.stop().await;
}
