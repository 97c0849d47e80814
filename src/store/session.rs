//! The session every connection sets up, and the check at start that it holds: through a
//! pooler in transaction mode it would not.

use super::Store;
use super::setup::SetupError;
use sqlx::{Connection, PgConnection};
use std::time::Duration;

/// What every connection sets first: the service's schema for every statement and the
/// migrations; and the planner steered to index nested loops. Every statement joins a batch
/// (at most BATCH_SIZE rows, from UNNEST) to a table on an indexed key. With generic-plan
/// estimates Postgres picked hash joins over a full scan of `users`, a cost that grows with
/// the table, where index nested loops cost the same at any size (BENCHMARKS.md, Drain,
/// "The planner finding"). These connections run only our statements. The schema was checked to be a plain identifier at start; quoted anyway. A
/// session idle inside a transaction for a minute (a replica frozen while holding the
/// brake window's lock) is ended by the server.
pub(super) fn session_settings(schema: &str) -> String {
    format!(
        "SET search_path = \"{schema}\"; SET enable_hashjoin = off; SET enable_mergejoin = off; \
         SET idle_in_transaction_session_timeout = '60s'"
    )
}

/// How long `verify_session` waits for each of its own connections.
const VERIFY_CONNECT: Duration = Duration::from_secs(5);

/// `verify_session` could not open its two connections (SQLSTATE 53300): said, not fatal;
/// so is a connect that does not answer within `VERIFY_CONNECT`.
fn skipped(e: &sqlx::Error) -> Result<(), SetupError> {
    tracing::warn!(
        error = %e,
        "could not open two extra connections to check for a pooler in transaction mode; \
         check skipped"
    );
    Ok(())
}

impl Store {
    /// At start: the session holds our settings on every transaction. A pooler in
    /// transaction mode hands a client's transactions to whichever server connection is
    /// free, and most of those never ran `session_settings`: statements would meet another
    /// schema's tables. Two connections of our own mark their sessions; while the first
    /// holds a transaction open, the second must keep seeing its own mark and our schema,
    /// before and after the first lets go. Otherwise: a configuration error; a database
    /// that fails meanwhile is an outage.
    pub async fn verify_session(&self) -> Result<(), SetupError> {
        let text = SetupError::from;
        // Two connections next to the pool's: a role or server sized for the pool alone
        // refuses them (53300). That is no pooler in transaction mode (PgBouncer queues a
        // login rather than refuse it) and no configuration error: skip the check.
        let too_many = |e: &sqlx::Error| {
            e.as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "53300")
                // A pooler whose pool is sized to the sidecar queues the extra logins.
                || matches!(e, sqlx::Error::PoolTimedOut)
        };
        let connect = || async {
            tokio::time::timeout(VERIFY_CONNECT, PgConnection::connect_with(&self.opts))
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut))
        };
        // The first session is the pool's own (the start's ping left it idle), so the check
        // needs one connection more than the pool, not two.
        let pooled = tokio::time::timeout(VERIFY_CONNECT, self.pool.acquire()).await;
        let mut first = match pooled.unwrap_or(Err(sqlx::Error::PoolTimedOut)) {
            Err(e) if too_many(&e) => return skipped(&e),
            other => other.map_err(text)?,
        };
        let mut second = match connect().await {
            Err(e) if too_many(&e) => return skipped(&e),
            other => other.map_err(text)?,
        };
        for (conn, mark) in [(&mut *first, "first"), (&mut second, "second")] {
            let set = format!("{}; SET user_sync.session = '{mark}'", self.session);
            sqlx::Executor::execute(&mut *conn, set.as_str())
                .await
                .map_err(text)?;
        }
        let mut held = (*first).begin().await.map_err(text)?;
        sqlx::query("SELECT 1")
            .persistent(false)
            .execute(&mut *held)
            .await
            .map_err(text)?;
        let mut marks = vec![self.session_mark(&mut second).await?];
        held.commit().await.map_err(text)?;
        for _ in 0..3 {
            marks.push(self.session_mark(&mut second).await?);
        }
        drop(first);
        let _ = second.close().await;
        if marks.iter().all(|m| m.as_deref() == Some("second")) {
            return Ok(());
        }
        Err(SetupError::Config(
            "DATABASE_URL: transactions of one connection reach other server sessions \
             (a pooler in transaction mode): the worker's session settings and prepared \
             statements would not hold; connect directly or use PgBouncer with \
             pool_mode = session"
                .into(),
        ))
    }

    /// The connection's session mark, after checking that its schema is ours.
    async fn session_mark(&self, conn: &mut PgConnection) -> Result<Option<String>, SetupError> {
        // Unnamed statements: a named one could meet another client's in a pooled session.
        let (schema, mark): (Option<String>, Option<String>) = sqlx::query_as(
            "SELECT current_setting('search_path'), current_setting('user_sync.session', true)",
        )
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
        // Before the migrations the schema may not exist yet: compare the setting itself.
        let schema = schema.map(|s| s.trim_matches('"').to_string());
        if schema.as_deref() != Some(self.schema.as_str()) {
            return Err(SetupError::Config(format!(
                "DATABASE_URL: the session's schema is {schema:?}, not DATABASE_SCHEMA ({}): a \
                 pooler in front of Postgres dropped the session settings; connect directly \
                 or use PgBouncer with pool_mode = session",
                self.schema
            )));
        }
        Ok(mark)
    }
}
