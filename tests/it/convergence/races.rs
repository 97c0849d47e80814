//! What another transaction commits between a statement's snapshot and its writes: the
//! guard's `ON CONFLICT` moves a watermark that appears meanwhile forward, and the row
//! write, which UPDATEs the rows its snapshot has and INSERTs the others, runs again for a
//! row that appears or disappears meanwhile.

use crate::support::*;
use sqlx::{Connection, PgConnection};
use std::time::Duration;
use user_sync::decide::{self, Outcome, Planned};
use user_sync::store::{EventResult, Store};

const WAIT: Duration = Duration::from_secs(30);
/// Another transaction's new watermark for a user, older than any event here.
const INSERT_WATERMARK: &str = "INSERT INTO user_sync.user_watermarks \
     (auth_user_id, event_ts, event_rank, event_digest, status_active) \
     VALUES ($1, '2023-01-01T00:00:00Z', 0, 0, true)";

/// Another transaction, open, that ran `sql` (bound to user 1's auth id).
async fn holding(env: &Env, sql: &str) -> PgConnection {
    let mut conn = PgConnection::connect(&env.db.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query(sql)
        .bind(uid(1))
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Applies `event` while `other` holds what it needs; commits `other` once the apply
/// waits on it, and returns the apply's results.
async fn apply_past(
    env: &Env,
    store: &Store,
    mut other: PgConnection,
    event: serde_json::Value,
) -> Vec<(usize, EventResult)> {
    let events: Vec<Planned> = vec![planned(&event)];
    let applying = tokio::spawn({
        let store = store.clone();
        async move {
            let (users, _) = decide::reduce(&events);
            store.apply(&events, &users).await.unwrap()
        }
    });
    let waits = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
         AND application_name = 'user-sync' AND wait_event_type = 'Lock'",
        env.db.name
    );
    wait_for(
        "the apply waiting on the other transaction",
        WAIT,
        || async { count(store, &waits).await >= 1 },
    )
    .await;
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    applying.await.unwrap()
}

/// A replica inserts a user's first watermark (for an older event) after the guard's
/// snapshot: the guard's insert waits for it and then skips the user, and the guard runs
/// again for that user, which now has a row to move forward: the newer event applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watermark_another_replica_inserts_meanwhile_is_moved_forward_not_lost() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let other = holding(&env, INSERT_WATERMARK).await;
    let results = apply_past(&env, &store, other, created(1)).await;
    assert_eq!(results, vec![(0, EventResult::Done(Outcome::Applied))]);
    assert_eq!(row(&store, 1).await.map(|r| r.0), Some(true));
}

/// The backend deletes a user's row while the upsert waits on it: the update finds no row
/// to write, and the upsert runs again for that user, inserting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_backend_deletes_meanwhile_is_written_again() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let first: Vec<Planned> = vec![planned(&created(1))];
    let (users, _) = decide::reduce(&first);
    store.apply(&first, &users).await.unwrap();
    let other = holding(&env, "DELETE FROM user_sync.users WHERE auth_user_id = $1").await;
    let later = event(
        "user.updated",
        1,
        "2024-01-02T00:00:00Z",
        "student",
        &["lms"],
    );
    let results = apply_past(&env, &store, other, later).await;
    assert_eq!(results, vec![(0, EventResult::Done(Outcome::Applied))]);
    assert_eq!(row(&store, 1).await.map(|r| r.0), Some(true));
}

/// The guard locks a batch's users in user id order, whether their watermarks exist or
/// not: a transaction that holds user 1's new watermark and then wants user 2's (the
/// release before's guard, another replica's) waits for the apply instead of deadlocking
/// with it.
/// The apply holds users 1 (absent, inserted) and 2 (present, updated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_locks_new_and_existing_watermarks_in_user_id_order() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let first: Vec<Planned> = vec![planned(&created(2))];
    let (users, _) = decide::reduce(&first);
    store.apply(&first, &users).await.unwrap();
    let mut other = holding(&env, INSERT_WATERMARK).await;
    // The other transaction looks for a cycle before the apply does (1 s by default).
    sqlx::query("SET deadlock_timeout = '100ms'")
        .execute(&mut other)
        .await
        .unwrap();
    let later = |u| {
        event(
            "user.updated",
            u,
            "2024-01-02T00:00:00Z",
            "student",
            &["lms"],
        )
    };
    let events: Vec<Planned> = vec![planned(&later(1)), planned(&later(2))];
    let applying = tokio::spawn({
        let store = store.clone();
        async move {
            let (users, _) = decide::reduce(&events);
            store.apply(&events, &users).await.unwrap()
        }
    });
    let waits = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
         AND application_name = 'user-sync' AND wait_event_type = 'Lock'",
        env.db.name
    );
    wait_for("the apply waiting on user 1", WAIT, || async {
        count(&store, &waits).await >= 1
    })
    .await;
    let second = sqlx::query(
        "UPDATE user_sync.user_watermarks SET updated_at = now() WHERE auth_user_id = $1",
    )
    .bind(uid(2))
    .execute(&mut other)
    .await;
    assert!(
        second.is_ok(),
        "the other transaction deadlocked: {second:?}"
    );
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let results = applying.await.unwrap();
    // User 1 gets its row; user 2's row had the update's fields already.
    let done = |o| EventResult::Done(o);
    assert_eq!(
        results,
        vec![(0, done(Outcome::Applied)), (1, done(Outcome::Unchanged))]
    );
}
