//! Two batches in flight (`PIPELINE_DEPTH=2`): the later one may commit first, but it is
//! acknowledged only after the earlier one, and when the earlier one fails (the database
//! held past the outage limit, the broker connection gone) the later one goes back to the
//! queue with it. Shutdown finishes both. Batches of one delivery make "batch" and "event"
//! the same thing here; a row lock held by the test keeps the first one waiting.

use crate::helpers::*;
use crate::proxy::BrokerProxy;
use sqlx::{Connection, PgConnection};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const LATER: &str = "2024-01-02T00:00:00Z";

async fn two_in_flight() -> Env {
    Env::new()
        .await
        .set("batch_size", "1")
        .set("pipeline_depth", "2")
}

/// User `n`'s watermark row locked by another session, as a replica in mid-transaction
/// holds it: a batch naming that user waits at its first statement.
pub(crate) struct RowLock {
    conn: PgConnection,
    pid: i32,
}

impl RowLock {
    pub(crate) async fn take(env: &Env, user: u8) -> Self {
        let mut conn = PgConnection::connect(&env.db.url()).await.unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        sqlx::query("SELECT 1 FROM user_sync.user_watermarks WHERE auth_user_id = $1 FOR UPDATE")
            .bind(uid(user))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let pid = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        Self { conn, pid }
    }

    pub(crate) async fn release(mut self) {
        sqlx::query("ROLLBACK")
            .execute(&mut self.conn)
            .await
            .unwrap();
    }
}

/// Worker sessions of this test's database waiting on a lock (a row, or an advisory lock).
pub(crate) async fn lock_waits(env: &Env) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
         AND application_name = 'user-sync' AND wait_event_type = 'Lock'",
        env.db.name
    );
    count(&env.store(), &sql).await
}

/// Waits until one of the worker's statements waits on a row lock.
async fn wait_blocked(env: &Env) {
    wait_for("a batch waiting on the row lock", WAIT, || async {
        lock_waits(env).await >= 1
    })
    .await;
}

async fn wait_row(env: &Env, user: u8) {
    let store = env.store();
    wait_for("row applied", WAIT, || async {
        row(&store, user).await.is_some()
    })
    .await;
}

/// Whether user `n`'s status stands on the event at `ts`.
async fn stands_on(env: &Env, user: u8, ts: &str) -> bool {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM user_watermarks WHERE auth_user_id = $1 AND event_ts = $2::timestamptz",
    )
    .bind(uid(user))
    .bind(ts)
    .fetch_one(env.store().pool())
    .await
    .is_ok_and(|n| n == 1)
}

/// User 1 exists; its update waits on a row lock the test holds (the first batch); user
/// 2's creation (the second batch) has committed meanwhile on the other connection.
async fn first_waits_second_committed(env: &Env, p: &Publisher) -> RowLock {
    p.create_student(1, &["lms"]).await;
    wait_row(env, 1).await;
    let lock = RowLock::take(env, 1).await;
    p.send("user.updated", 1, LATER, "student", &["lms"]).await;
    wait_blocked(env).await;
    p.create_student(2, &["lms"]).await;
    wait_row(env, 2).await;
    lock
}

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
    p.send("user.updated", 1, LATER, "student", &["lms"]).await;
    wait_blocked(&env).await;
    let latest = "2024-01-03T00:00:00Z";
    p.send("user.updated", 1, latest, "student", &["lms"]).await;
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
