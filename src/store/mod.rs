//! The Postgres adapter: pool, migrations and reads. Every SQL statement lives in this module.

mod apply;
mod attempt;
mod audit;
mod brake_log;
mod claim;
mod classify;
mod export;
mod freed;
mod guard;
mod lookup;
mod migrations;
mod report;
mod result;
mod session;
mod setup;
mod stale;
mod statements;
mod target_table;
mod tls;
mod trail;
mod trail_copy;
mod trail_read;
mod upsert_sql;

pub use audit::{Audit, DeadLetterEntry, EventMeta};
pub use brake_log::BrakeEntry;
pub use classify::config_problem;
pub use export::ExportIds;
pub use lookup::{RowView, WatermarkView};
pub use report::UserCounts;
pub use result::{Commit, EventResult};
pub use setup::SetupError;
pub use target_table::{TargetTableProblem, target_table_ddl};
pub use trail_read::TrailEntry;

use crate::decide::{EventKey, Reason, State, Status, UserRow};
use crate::redact::PasswordHash;
use crate::target_table::TargetTable;
use secrecy::ExposeSecret;
use session::session_settings;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Row};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use target_table::{TargetTableReads, TargetTableSql};
use uuid::Uuid;

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    schema: String,
    /// `SERVICE_NAME`, which the schema is claimed for (see `claim`).
    service: String,
    /// Set once the migrations ran: from then on `probe` sets a vanished schema up again.
    migrated: Arc<AtomicBool>,
    /// A backend's table named by `[target]`, if any; its statements once checked at start.
    target_table: Option<Arc<TargetTable>>,
    statements: Arc<OnceLock<TargetTableSql>>,
    reads: Option<Arc<TargetTableReads>>,
    /// How to connect, and what each connection sets first (`verify_session` uses both).
    opts: PgConnectOptions,
    session: String,
    /// How the trail is written (`trail_copy::Via`).
    trail_via: Arc<trail_copy::Via>,
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
            service: settings.service_name.clone(),
            migrated: Arc::default(),
            target_table: settings.target_table.clone().map(Arc::new),
            reads: settings
                .target_table
                .as_ref()
                .map(|m| Arc::new(TargetTableReads::new(m))),
            statements: Arc::new(OnceLock::new()),
            opts,
            session,
            trail_via: Arc::default(),
        })
    }

    /// `prepare_target`, with a database error as one more problem line.
    pub async fn prepare_target_table(&self) -> Result<(), Vec<TargetTableProblem>> {
        match self.prepare_target().await {
            Ok(()) => Ok(()),
            Err(SetupError::TargetTable(problems)) => Err(problems),
            Err(SetupError::Absent(problem)) => Err(vec![problem]),
            Err(e) => Err(vec![TargetTableProblem(format!(
                "cannot read the catalog: {e}"
            ))]),
        }
    }

    /// The target table's statements; `None` for the service's own table.
    pub(crate) fn target_table_sql(&self) -> Option<&TargetTableSql> {
        match &self.target_table {
            None => None,
            Some(_) => Some(
                self.statements
                    .get()
                    .expect("prepare_target_table ran at start"),
            ),
        }
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
