//! Reading and shaping a test's database: rows, counts, statements run as the backend
//! would, outages, a backend's own refusal.

use super::{Env, pg, uid};
use sqlx::{Connection as _, PgConnection, PgPool};
use user_sync::store::Store;

/// One user's row as (is_active, deactivation_reason, email), if any.
pub(crate) async fn row(store: &Store, user: u8) -> Option<(bool, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT is_active, deactivation_reason, email FROM users WHERE auth_user_id = $1",
    )
    .bind(uid(user))
    .fetch_optional(store.pool())
    .await
    .unwrap()
}

/// The last name in user `user`'s row (which must exist).
pub(crate) async fn last_name(store: &Store, user: u8) -> Option<String> {
    sqlx::query_scalar("SELECT last_name FROM users WHERE auth_user_id = $1")
        .bind(uid(user))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// The one number a `SELECT count(*) ...` gives.
pub(crate) async fn count(store: &Store, sql: &str) -> i64 {
    scalar(store.pool(), sql).await
}

/// The one number a query gives, on any connection pool.
pub(crate) async fn scalar(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

/// How many users are active.
pub(crate) async fn active(store: &Store) -> i64 {
    count(store, "SELECT count(*) FROM users WHERE is_active").await
}

/// How many of `users` are active.
pub(crate) async fn active_of(store: &Store, users: impl IntoIterator<Item = u8>) -> usize {
    let mut n = 0;
    for u in users {
        if row(store, u).await.is_some_and(|r| r.0) {
            n += 1;
        }
    }
    n
}

/// Runs `;`-separated statements one at a time (`CREATE INDEX CONCURRENTLY` refuses a
/// multi-statement string: it runs as one transaction).
pub(crate) async fn run_sql(db: &PgPool, sql: &str) {
    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::query(statement)
            .execute(db)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

/// A connection as the backend's own: its default search path, not the service's schema.
pub(crate) async fn backend(env: &Env) -> PgPool {
    PgPool::connect(&env.db.url()).await.unwrap()
}

/// Refuses (and cuts) or allows again every connection to a test database: an outage.
pub(crate) async fn set_connections(db: &str, allow: bool) {
    let mut admin = PgConnection::connect(&format!("{}/postgres", pg()))
        .await
        .unwrap();
    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS {allow}"))
        .execute(&mut admin)
        .await
        .unwrap();
    if !allow {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(db)
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

/// Installs a trigger on the users table that refuses rows named `Refused` (P0001), as a
/// backend's own validation would.
pub(crate) async fn refusing_trigger(store: &Store) {
    for sql in [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.first_name = 'Refused' THEN RAISE EXCEPTION 'refused by the backend'; END IF; \
           RETURN NEW; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION refuse()",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
}

/// Trail lines of events from the queue (`user.*`), every user's, as this release writes
/// them.
pub(crate) async fn queue_trail_lines(store: &Store) -> i64 {
    use user_sync::decide::trail_code::{TYPE_BITS, event_type_code};
    let codes: Vec<i16> = ["user.created", "user.updated", "user.deleted"]
        .into_iter()
        .map(event_type_code)
        .collect();
    sqlx::query_scalar("SELECT count(*) FROM audit_trail WHERE code & $1 = ANY($2)")
        .bind(TYPE_BITS)
        .bind(codes)
        .fetch_one(store.pool())
        .await
        .unwrap()
}
