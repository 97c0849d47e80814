//! The Postgres adapter: pool, migrations and reads. Every SQL statement lives in this module.

mod apply;
mod attempt;
mod audit;
mod brake_log;
mod classify;
mod export;
mod lookup;
mod mapped;
mod migrations;
mod report;
mod statements;
mod tls;
mod trail;

pub use apply::{Commit, EventResult};
pub use audit::{Audit, DeadLetterEntry, EventMeta, TrailEntry};
pub use brake_log::BrakeEntry;
pub use classify::config_problem;
pub use export::ExportIds;
pub use lookup::{RowView, WatermarkView};
pub use mapped::{TargetProblem, target_sql};
pub use report::UserCounts;

use crate::decide::{EventKey, Reason, State, Status, UserRow};
use crate::redact::PasswordHash;
use crate::target::Mapping;
use mapped::{MappedReads, MappedSql};
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use uuid::Uuid;

/// What every connection sets first: the service's schema for every statement and the
/// migrations; and the planner steered to index nested loops. Every statement joins a batch
/// (at most BATCH_SIZE rows, from UNNEST) to a table on an indexed key. With generic-plan
/// estimates Postgres picked hash joins over a full scan of `users`, a cost that grows with
/// the table: 17-27 ms per statement at 25 000 users against 2 ms as index nested loops, and
/// 3x the Postgres CPU per drained event (BENCHMARKS.md). These connections run only our
/// statements. The schema was checked to be a plain identifier at start; quoted anyway. A
/// session idle inside a transaction for a minute (a replica frozen while holding the
/// brake window's lock) is ended by the server.
fn session_settings(schema: &str) -> String {
    format!(
        "SET search_path = \"{schema}\"; SET enable_hashjoin = off; SET enable_mergejoin = off; \
         SET idle_in_transaction_session_timeout = '60s'"
    )
}

/// How long `verify_session` waits for each of its own connections.
const VERIFY_CONNECT: Duration = Duration::from_secs(5);

/// `verify_session` could not open its two connections (SQLSTATE 53300): said, not fatal;
/// so is a connect that does not answer within `VERIFY_CONNECT`.
fn skipped(e: &sqlx::Error) -> Result<(), String> {
    tracing::warn!(
        error = %e,
        "could not open two extra connections to check for a pooler in transaction mode; \
         check skipped"
    );
    Ok(())
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    schema: String,
    /// A backend's table named by `[target]`, if any; its statements once checked at start.
    target: Option<Arc<Mapping>>,
    mapped: Arc<OnceLock<MappedSql>>,
    reads: Option<Arc<MappedReads>>,
    /// How to connect, and what each connection sets first (`verify_session` uses both).
    opts: PgConnectOptions,
    session: String,
}

impl Store {
    /// A lazy pool: nothing connects until first use, so a database that is down at start
    /// delays the worker instead of crashing it.
    pub fn new(settings: &crate::settings::Settings) -> Result<Self, sqlx::Error> {
        let url = settings
            .database_url()
            .map_err(|e| sqlx::Error::Configuration(e.into()))?;
        tls::check_files(url.expose_secret()).map_err(|e| sqlx::Error::Configuration(e.into()))?;
        let opts = PgConnectOptions::from_str(url.expose_secret())?
            .application_name("user-sync")
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
        let session = session_settings(&settings.database_schema);
        let on_connect = session.clone();
        let pool = PgPoolOptions::new()
            .max_connections(settings.database_max_connections)
            // Short: a database outage must surface as an error quickly so the worker pauses.
            .acquire_timeout(Duration::from_secs(3))
            // Set on each new connection, not in the startup packet's `options`: PgBouncer
            // refuses `options`, or with `ignore_startup_parameters` drops it silently and
            // the statements would meet whatever `users` lives in `public`. `verify_session`
            // checks at start that the settings hold.
            .after_connect(move |conn, _| {
                let session = on_connect.clone();
                Box::pin(async move {
                    sqlx::Executor::execute(conn, session.as_str()).await?;
                    Ok(())
                })
            })
            .connect_lazy_with(opts.clone());
        Ok(Self {
            pool,
            schema: settings.database_schema.clone(),
            target: settings.target.clone().map(Arc::new),
            reads: settings
                .target
                .as_ref()
                .map(|m| Arc::new(MappedReads::new(m))),
            mapped: Arc::new(OnceLock::new()),
            opts,
            session,
        })
    }

    /// With a `[target]` mapping: checks it against the database and prepares its
    /// statements; every problem found, one line each, otherwise. Without one: nothing.
    pub async fn prepare_target(&self) -> Result<(), Vec<TargetProblem>> {
        let Some(m) = &self.target else {
            return Ok(());
        };
        let columns = self.check_target(m).await?;
        let mut sql = MappedSql::new(m, &columns);
        let indexed = self.email_indexed(m).await.unwrap_or(false);
        if !indexed {
            tracing::warn!(
                table = %format!("{}.{}", m.schema, m.table),
                column = %m.email,
                "no index on lower(email): conflicts and adoption scan the table each batch; \
                 add the one `user-sync migrate --print-target-sql` prints"
            );
        }
        sql.hash_joins = !indexed;
        let _ = self.mapped.set(sql);
        Ok(())
    }

    /// The mapped target's statements; `None` for the service's own table.
    pub(crate) fn mapped(&self) -> Option<&MappedSql> {
        match &self.target {
            None => None,
            Some(_) => Some(self.mapped.get().expect("prepare_target ran at start")),
        }
    }

    /// At start: the session holds our settings on every transaction. A pooler in
    /// transaction mode hands a client's transactions to whichever server connection is
    /// free, and most of those never ran `session_settings`: statements would meet another
    /// schema's tables. Two connections of our own mark their sessions; while the first
    /// holds a transaction open, the second must keep seeing its own mark and our schema,
    /// before and after the first lets go. Otherwise: a configuration error, never an
    /// outage.
    pub async fn verify_session(&self) -> Result<(), String> {
        let text = |e: sqlx::Error| e.to_string();
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
        Err(
            "DATABASE_URL: transactions of one connection reach other server sessions \
             (a pooler in transaction mode): the worker's session settings and prepared \
             statements would not hold; connect directly or use PgBouncer with \
             pool_mode = session"
                .into(),
        )
    }

    /// The connection's session mark, after checking that its schema is ours.
    async fn session_mark(&self, conn: &mut PgConnection) -> Result<Option<String>, String> {
        // Unnamed statements: a named one could meet another client's in a pooled session.
        let (schema, mark): (Option<String>, Option<String>) = sqlx::query_as(
            "SELECT current_setting('search_path'), current_setting('user_sync.session', true)",
        )
        .persistent(false)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
        // Before the migrations the schema may not exist yet: compare the setting itself.
        let schema = schema.map(|s| s.trim_matches('"').to_string());
        if schema.as_deref() != Some(self.schema.as_str()) {
            return Err(format!(
                "DATABASE_URL: the session's schema is {schema:?}, not DATABASE_SCHEMA ({}): a \
                 pooler in front of Postgres dropped the session settings; connect directly \
                 or use PgBouncer with pool_mode = session",
                self.schema
            ));
        }
        Ok(mark)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the schema and applies the embedded migrations; those a later release
    /// applied are named and let be. Replicas starting together are serialised by the
    /// migrator's advisory lock.
    pub async fn migrate(&self) -> Result<(), sqlx::Error> {
        // The schema name was validated against [a-z_][a-z0-9_]* at start; quoted anyway.
        let create = format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", self.schema);
        if let Err(e) = sqlx::query(&create).execute(&self.pool).await {
            // Two replicas racing on CREATE SCHEMA IF NOT EXISTS: one gets a unique violation.
            let raced = e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505");
            if !raced {
                return Err(e);
            }
        }
        migrations::run(&self.pool).await
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        // Unnamed (not prepared) so that it answers the same through any pooler.
        sqlx::query("SELECT 1")
            .persistent(false)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Every user the service knows, as the convergence rule sees it: for tests, the
    /// benchmark's verification and operator tools.
    pub async fn states(&self) -> Result<BTreeMap<Uuid, State>, sqlx::Error> {
        let mut states: BTreeMap<Uuid, State> = BTreeMap::new();
        let marks = sqlx::query(
            "SELECT auth_user_id, event_ts, event_rank, event_digest, status_active, \
             status_reason, data_ts, data_rank, data_digest FROM user_watermarks",
        )
        .fetch_all(&self.pool)
        .await?;
        for m in marks {
            let state = states.entry(m.get(0)).or_default();
            let reason: Option<String> = m.get(5);
            state.status = Some(Status {
                key: EventKey {
                    timestamp: m.get(1),
                    rank: m.get(2),
                    digest: m.get(3),
                },
                active: m.get(4),
                reason: reason.as_deref().and_then(Reason::parse),
            });
            let data_ts: Option<time::OffsetDateTime> = m.get(6);
            state.data_watermark = data_ts.map(|timestamp| EventKey {
                timestamp,
                rank: m.get(7),
                digest: m.get(8),
            });
        }
        let rows = sqlx::query(
            "SELECT auth_user_id, email, first_name, last_name, password_hash, role, \
             allowed_services, is_active, deactivation_reason, source_updated_at \
             FROM users WHERE auth_user_id IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let reason: Option<String> = r.get(8);
            states.entry(r.get(0)).or_default().row = Some(UserRow {
                email: r.get::<Option<String>, _>(1).unwrap_or_default(),
                first_name: r.get(2),
                last_name: r.get(3),
                password_hash: r.get::<Option<String>, _>(4).map(PasswordHash::from),
                role: r.get(5),
                allowed_services: r.get(6),
                is_active: r.get(7),
                deactivation_reason: reason.as_deref().and_then(Reason::parse),
                source_updated_at: r
                    .get::<Option<time::OffsetDateTime>, _>(9)
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            });
        }
        Ok(states)
    }
}
