//! Review of "Two or more batches in flight" (`PIPELINE_DEPTH`), combined with the rest:
//! adoption of the backend's own rows, email conflicts, triggers, outages, the brake.
//!
//! Each test without a mark reproduced a defect (its comment says what happened and what
//! should; `Fixed:` says how it was). Tests marked `// holds:` passed from the start and
//! cover a combination no other test did.

use crate::helpers::*;
use sqlx::{Connection, PgConnection};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const LEGACY: &str = "legacy@example.com";

/// Worker sessions of this test's database waiting on a lock (a row, or an advisory lock).
async fn lock_waits(env: &Env) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
         AND application_name = 'user-sync' AND wait_event_type = 'Lock'",
        env.db.name
    );
    count(&env.store(), &sql).await
}

/// A session holding advisory lock 42, which `slow_trigger` makes a writer wait on.
struct Advisory(PgConnection);

impl Advisory {
    async fn take(env: &Env) -> Self {
        let mut conn = PgConnection::connect(&env.db.url()).await.unwrap();
        sqlx::query("SELECT pg_advisory_lock(42)")
            .execute(&mut conn)
            .await
            .unwrap();
        Self(conn)
    }

    async fn release(mut self) {
        sqlx::query("SELECT pg_advisory_unlock(42)")
            .execute(&mut self.0)
            .await
            .unwrap();
    }
}

/// A backend trigger that makes a write of a row named `Slow` wait for advisory lock 42
/// (as a slow trigger would), with every row lock its transaction took so far held.
async fn slow_trigger(env: &Env, table: &str, name_column: &str) {
    for sql in [
        format!(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF NEW.{name_column} = 'Slow' THEN PERFORM pg_advisory_xact_lock(42); END IF; \
               RETURN NEW; END $$"
        ),
        format!(
            "CREATE TRIGGER slow BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW \
             EXECUTE FUNCTION slow()"
        ),
    ] {
        sqlx::query(&sql).execute(env.store().pool()).await.unwrap();
    }
}

/// A created event of `user` with `email` and `first_name`.
fn created_with(user: u8, email: &str, first_name: &str) -> serde_json::Value {
    let mut e = event(
        "user.created",
        user,
        "2024-01-01T00:00:00Z",
        "student",
        &["lms"],
    );
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

/// Two users created with the email of one row the backend had, in two batches in
/// flight at once: the first adopts the row; the second, which names another auth user,
/// must not take it over. It did: its adoption statement found the row unlinked in its
/// snapshot, waited on the first batch's row lock, and after that commit re-checked only
/// `u.id = (subquery on the old snapshot)`, so it relinked the row to user 2. User 1,
/// whose creation was acknowledged as applied, was left without a row, and user 2 got the
/// email user 1 held (no conflict). With one batch at a time (or before this change, with
/// two replicas) the second creation meets an active user 1 and is an email conflict.
// Fixed: the adoption statements re-check that the row itself is still unlinked
// (`u.auth_user_id IS NULL`), which Postgres evaluates on the row as committed.
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
