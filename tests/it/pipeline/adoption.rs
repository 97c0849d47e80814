//! Adoption of the backend's own rows with batches in flight: a row adopted by one batch
//! stays that user's, and a row the backend inserts while a batch waits is adopted, not
//! duplicated.

use super::*;
use crate::support::*;
use sqlx::{Connection, PgConnection};

const LEGACY: &str = "legacy@example.com";

/// A created event of `user` with `email` and `first_name`.
fn created_with(user: u8, email: &str, first_name: &str) -> serde_json::Value {
    let mut e = created(user);
    e["user"]["email"] = email.into();
    e["user"]["first_name"] = first_name.into();
    e
}

/// The backend's row of its own (no auth id) with `email`; its local id.
async fn legacy_row(env: &Env, email: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO users (email, first_name, last_name, role, is_active) \
         VALUES ($1, 'Old', 'Name', 'student', true) RETURNING id",
    )
    .bind(email)
    .fetch_one(env.store().pool())
    .await
    .unwrap()
}

/// Two users created with the email of one row the backend had, in two batches in flight
/// at once: the first adopts the row; the second, naming another auth user, does not take
/// it over once the first commits, and is dead-lettered as an email conflict, as with one
/// batch at a time. The adoption checks that the row is still unlinked as committed: a
/// check on the snapshot taken before the wait would relink it, and leave user 1,
/// acknowledged as applied, without a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_adopted_by_one_batch_is_not_taken_over_by_the_next_in_flight() {
    let env = Env::new()
        .await
        .set("batch_size", "1")
        .set("pipeline_depth", "2");
    let store = env.store();
    store.migrate().await.unwrap();
    let legacy = legacy_row(&env, LEGACY).await;
    slow_trigger(&env, "users", "first_name").await;
    let advisory = Advisory::take(&env).await;
    let worker = env.start().await;
    let p = env.publisher().await;
    // Batch 1 adopts the row, then waits in the trigger with the row locked.
    p.publish_json(&created_with(1, LEGACY, "Slow")).await;
    wait_for("batch 1 waiting in the trigger", WAIT, || async {
        lock_waits(&env).await == 1
    })
    .await;
    // Batch 2 names user 2 with the same email; it waits on the adopted row.
    p.publish_json(&created_with(2, LEGACY, "Second")).await;
    wait_for("batch 2 waiting on the row", WAIT, || async {
        lock_waits(&env).await == 2
    })
    .await;
    advisory.release().await;
    // User 2 can never have the email while user 1 holds it: dead-lettered (or, as it
    // was, given user 1's row).
    let dlq = env.dlq();
    wait_for("user 2's creation settled", WAIT, || async {
        row(&store, 2).await.is_some() || queue_counts(&dlq).await.is_some_and(|c| c.0 == 1)
    })
    .await;
    let owner: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT auth_user_id FROM users WHERE id = $1")
            .bind(legacy)
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(owner, Some(uid(1)), "the adopted row stays user 1's");
    assert!(row(&store, 2).await.is_none(), "user 2 has no row");
    let letters = env.dead_letters().await;
    assert_eq!(
        header(&letters[0], "x-error-kind").as_deref(),
        Some("email_conflict")
    );
    worker.stop().await;
}

/// A backend that makes its own row for a user (say, inactive until the email is
/// verified) while the auth system's event for that user waits on a row lock (a replica,
/// an import): once the lock goes the row is adopted, not duplicated. What the first
/// statement read before its wait cannot be trusted after it: inactive rows share an email
/// freely, so no index would refuse a second row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_backend_inserts_while_the_guard_waits_is_adopted() {
    let env = Env::new().await.set("pipeline_depth", "3");
    let worker = env.start().await;
    let p = env.publisher().await;
    let store = env.store();
    // A watermark without a row: user 1 seen, not for this service.
    p.create_student(1, &["sat"]).await;
    wait_for("user 1 seen", WAIT, || async {
        count(&store, "SELECT count(*) FROM user_watermarks").await == 1
    })
    .await;
    let lock = RowLock::take(&env, 1).await;
    p.update(1, "2024-01-02T00:00:00Z").await;
    wait_for("the guard waiting", WAIT, || async {
        lock_waits(&env).await == 1
    })
    .await;
    let mut backend = PgConnection::connect(&env.db.url()).await.unwrap();
    let legacy: i64 = sqlx::query_scalar(
        "INSERT INTO user_sync.users (email, first_name, role, is_active) \
         VALUES ('user1@example.com', 'Pending', 'student', false) RETURNING id",
    )
    .fetch_one(&mut backend)
    .await
    .unwrap();
    lock.release().await;
    wait_for("user 1 applied", WAIT, || async {
        row(&store, 1).await.is_some()
    })
    .await;
    let rows: Vec<(i64, Option<uuid::Uuid>)> =
        sqlx::query_as("SELECT id, auth_user_id FROM users ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![(legacy, Some(uid(1)))],
        "adopted, not duplicated"
    );
    worker.stop().await;
}
