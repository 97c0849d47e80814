//! The worker's own database sessions: over TLS as the URL asks, and within a role's
//! connection limit.

use crate::support::*;
use sqlx::Connection;
use std::time::Duration;

/// Postgres TLS through the URL: `verify-full` against the local server's own (snakeoil,
/// self-signed, for `localhost`) certificate as the root, and a refusal with another CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_through_sslmode_and_sslrootcert() {
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    if !std::path::Path::new(snakeoil).exists() {
        eprintln!("skipped: the local Postgres has no snakeoil certificate");
        return;
    }
    let env = Env::new().await;
    let by_name = env.db.url().replace("127.0.0.1", "localhost");
    let url = format!("{by_name}?sslmode=verify-full&sslrootcert={snakeoil}");
    let tls = Env {
        overrides: [("database_url".to_string(), url)].into(),
        ..env
    };
    let store = tls.store();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(encrypted, "the connection is TLS");
    store.pool().close().await;

    let other = write_pem(&Ca::new("some other CA"));
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        tls.db.url().replace("127.0.0.1", "localhost"),
        other.display()
    );
    let wrong = Env {
        overrides: [("database_url".to_string(), url)].into(),
        ..tls
    };
    let err = wrong.store().ping().await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let _ = std::fs::remove_file(other);
}

/// A role whose CONNECTION LIMIT equals DATABASE_MAX_CONNECTIONS (the pool's size) still
/// starts: the session check's own connections, refused past the limit (53300, too many
/// connections for role), skip the check with a warning instead of failing the start as
/// a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_connection_limit_sized_to_the_pool_still_starts() {
    let env = Env::new().await;
    let pool = env.settings().database_max_connections;
    let role = format!("{}_limited", env.db.name);
    let admin = env.store();
    for sql in [
        format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT {pool}"),
        format!("GRANT ALL ON DATABASE {} TO {role}", env.db.name),
    ] {
        sqlx::query(&sql).execute(admin.pool()).await.unwrap();
    }
    let url = pg_url_as(&role, &env.db.name);
    let env = env.set("database_url", &url);
    let app = user_sync::build(env.settings()).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(user_sync::run(app, shutdown.clone()));
    let queue = env.broker.queue.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let started = loop {
        if task.is_finished() {
            break false;
        }
        if queue_counts(&queue).await.is_some_and(|(_, c)| c > 0) {
            break true;
        }
        if tokio::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(15), task).await;
    // The role owns the schema by now: drop what it owns, then the role.
    let _ = sqlx::query(&format!("DROP OWNED BY {role} CASCADE"))
        .execute(admin.pool())
        .await;
    admin.pool().close().await;
    drop(env);
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Ok(mut pg_admin) = sqlx::PgConnection::connect(&format!("{}/postgres", pg())).await {
        let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
            .execute(&mut pg_admin)
            .await;
    }
    assert!(
        started,
        "did not start with a pool-sized role connection limit: {result:?}"
    );
}
