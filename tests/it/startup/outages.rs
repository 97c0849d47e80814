//! A database or broker that refuses, vanishes or goes read-only never ends the worker: it
//! waits, says so, and converges once the fault is gone.

use crate::support::*;
use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use sqlx::{Connection as _, PgConnection};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn admin(sql: &str) {
    let mut admin = PgConnection::connect(&format!("{}/postgres", pg()))
        .await
        .unwrap();
    sqlx::raw_sql(sql).execute(&mut admin).await.unwrap();
}

/// Waits for a consumer (`what`), then for user 1's creation to reach the table.
async fn consumes_again(env: &Env, what: &str) {
    env.wait_consumers(1, what, Duration::from_secs(60)).await;
    env.publisher().await.create_student(1, &["lms"]).await;
    let store = env.store();
    wait_for("the row", Duration::from_secs(20), || async {
        row(&store, 1).await.is_some_and(|r| r.0)
    })
    .await;
}

/// Ends every session on `db`: new ones take the database's settings as they are now.
async fn terminate_sessions(db: &str) {
    admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
    ))
    .await;
}

/// A demoted primary before start: the migrations meet SQLSTATE 25006. The worker waits,
/// not ready, and starts consuming once the database takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_at_start_is_waited_out() {
    let env = Env::new().await;
    let db = env.db.name.clone();
    admin(&format!(
        "ALTER DATABASE {db} SET default_transaction_read_only = on"
    ))
    .await;
    let shutdown = CancellationToken::new();
    let app = user_sync::build(env.settings()).unwrap();
    let http = app.http_addr();
    let task = tokio::spawn(user_sync::run(app, shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !task.is_finished(),
        "the worker exited on a read-only database"
    );
    let (status, body) = http_get(http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let (status, _) = http_get(http, "/healthz").await;
    assert_eq!(status, 200, "alive while it waits");

    admin(&format!(
        "ALTER DATABASE {db} RESET default_transaction_read_only"
    ))
    .await;
    terminate_sessions(&db).await;
    consumes_again(&env, "consuming once writable").await;
    let worker = Worker {
        shutdown,
        task,
        http,
    };
    worker.stop().await;
}

/// The service's schema dropped while consuming: the batch waits the outage out, the
/// session ends, and the worker sets the schema up again before it consumes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_dropped_while_consuming_is_set_up_again() {
    let env = Env::new().await;
    let worker = env.start().await;
    let publisher = env.publisher().await;
    publisher.create_student(1, &["lms"]).await;
    let store = env.store();
    wait_for("the first row", Duration::from_secs(20), || async {
        row(&store, 1).await.is_some()
    })
    .await;
    sqlx::query("DROP SCHEMA user_sync CASCADE")
        .execute(store.pool())
        .await
        .unwrap();
    publisher.create_student(2, &["lms"]).await;
    wait_for(
        "the row after the drop",
        Duration::from_secs(90),
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT is_active FROM user_sync.users WHERE auth_user_id = $1",
            )
            .bind(uid(2))
            .fetch_optional(store.pool())
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
        },
    )
    .await;
    assert!(!worker.task.is_finished());
    worker.stop().await;
}

/// The main queue deleted while consuming: the consumer is cancelled, the session ends,
/// and the next one declares the queue again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_deleted_while_consuming_is_declared_again() {
    let env = Env::new().await;
    let worker = env.start().await;
    let conn = Connection::connect(&amqp(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(
        env.broker.queue.as_str().into(),
        QueueDeleteOptions::default(),
    )
    .await
    .unwrap();
    let _ = conn.close(200, "bye".into()).await;
    consumes_again(&env, "the queue declared again").await;
    assert!(!worker.task.is_finished());
    worker.stop().await;
}
