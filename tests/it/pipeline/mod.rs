//! Batches in flight (`PIPELINE_DEPTH`): a later batch may commit first, but it is
//! acknowledged only after the earlier ones, goes back to the queue with them when they
//! fail, and waits its turn for the users, the emails and the brake decisions they hold.
//! Batches of one delivery make "batch" and "event" the same thing in most tests here; a
//! row lock, or an advisory lock a slow trigger waits on, keeps the first one waiting.

mod acks;
mod adoption;
mod brake;
mod turns;

use crate::support::*;
use sqlx::{Connection, PgConnection};
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
    p.update(1, LATER).await;
    wait_blocked(env).await;
    p.create_student(2, &["lms"]).await;
    wait_row(env, 2).await;
    lock
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
