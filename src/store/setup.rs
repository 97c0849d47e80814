//! What a start asks of the database before the first event (the migrations, the schema's
//! claim, the target table), with its failures split in two: what only an operator fixes
//! (exit 2, naming the setting) and what the database's state explains (waited out: in the
//! sidecar form an exit takes the backend's Pod out of its Service).

use super::Store;
use super::classify::config_problem;
use super::target_table::{TargetTableProblem, TargetTableSql};
use sqlx::migrate::MigrateError;
use std::sync::atomic::Ordering;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A setting that does not fit the database (`DATABASE_URL`'s role, `DATABASE_SCHEMA`,
    /// `SERVICE_NAME`, this release against the schema): nothing a retry changes.
    #[error("{0}")]
    Config(String),
    /// The target table (`[target]`) does not fit the database: one line per problem.
    #[error("the [target] table does not fit the database:\n{}", lines(.0))]
    TargetTable(Vec<TargetTableProblem>),
    /// The `[target]` table does not exist yet: in the sidecar form the backend's own
    /// migrations create it, and they run after this native sidecar has started. The worker
    /// waits for it; a command refuses.
    #[error("{0}")]
    Absent(TargetTableProblem),
    /// A migration this release knows, recorded with another checksum or left half-applied:
    /// the schema is another build's. Exit 1, as `docs/migrations.md` promises.
    #[error("migrations failed: {0}")]
    Mismatch(sqlx::Error),
    /// The database refused, vanished or is read-only: waited out.
    #[error("database: {0}")]
    Outage(sqlx::Error),
}

fn lines(problems: &[TargetTableProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

impl From<sqlx::Error> for SetupError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Migrate(m) = &e
            && matches!(
                m.as_ref(),
                MigrateError::VersionMismatch(_) | MigrateError::Dirty(_)
            )
        {
            return SetupError::Mismatch(e);
        }
        match setup_problem(&e) {
            Some(problem) => SetupError::Config(problem),
            None => SetupError::Outage(e),
        }
    }
}

/// An error at start that no retry fixes. Permission denied (42501) counts: the role's
/// grants are the deployment's, no failover or restart changes them, and a pause would
/// pass them off as "database unavailable". Everything else is the database's state: a
/// read-only database, a lost connection, a lock timeout.
pub(crate) fn setup_problem(e: &sqlx::Error) -> Option<String> {
    if let sqlx::Error::Migrate(m) = e {
        return match m.as_ref() {
            MigrateError::Execute(inner) | MigrateError::ExecuteMigration(inner, _) => {
                setup_problem(inner)
            }
            _ => None,
        };
    }
    if let Some(problem) = config_problem(e) {
        return Some(problem);
    }
    let db = e.as_database_error()?;
    (db.code().as_deref() == Some("42501")).then(|| {
        format!(
            "DATABASE_URL: the role lacks a privilege on DATABASE_SCHEMA or the database: {} \
             (SQLSTATE 42501)",
            db.message()
        )
    })
}

impl Store {
    /// The migrations, the schema claimed for `SERVICE_NAME`, and the `[target]` table
    /// checked: what the worker and the commands that write need first.
    pub async fn set_up(&self) -> Result<(), SetupError> {
        self.migrate_and_claim().await?;
        self.prepare_target().await
    }

    /// The migrations, then the schema claimed for `SERVICE_NAME` (see `claim`).
    pub async fn migrate_and_claim(&self) -> Result<(), SetupError> {
        self.migrate().await?;
        self.claim().await?;
        self.migrated.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the database answers, for the pause's probe. Once set up, a schema found
    /// gone (dropped, or a database restored without it) is set up again here, so the
    /// worker converges once the database takes writes instead of pausing for ever.
    pub async fn probe(&self) -> Result<(), sqlx::Error> {
        self.ping().await?;
        if !self.migrated.load(Ordering::Relaxed) {
            return Ok(());
        }
        let present: bool = sqlx::query_scalar(
            "SELECT to_regclass(format('%I._sqlx_migrations', $1::text)) IS NOT NULL",
        )
        .bind(&self.schema)
        .persistent(false)
        .fetch_one(&self.pool)
        .await?;
        if present {
            return Ok(());
        }
        tracing::warn!(schema = %self.schema, "DATABASE_SCHEMA is gone; applying the migrations again");
        self.migrate_and_claim().await.map_err(|e| match e {
            SetupError::Outage(e) => e,
            refused => sqlx::Error::Configuration(refused.to_string().into()),
        })
    }

    /// With a target table (`[target]`): checks it against the database and prepares its
    /// statements. Without one: nothing.
    pub(crate) async fn prepare_target(&self) -> Result<(), SetupError> {
        let Some(m) = &self.target_table else {
            return Ok(());
        };
        let columns = self.check_target_table(m).await?;
        let indexed = self.email_indexed(m).await?;
        if !indexed {
            tracing::warn!(
                table = %format!("{}.{}", m.schema, m.table),
                column = %m.email,
                "no index on lower(email): conflicts and adoption scan the table each batch; \
                 add the one `user-sync migrate --print-target-sql` prints"
            );
        }
        for key in self.target_keys_without_cascade().await? {
            tracing::warn!(
                %key,
                "a foreign key refers to a column the sync rewrites, without ON UPDATE CASCADE: \
                 a write that changes it (an adopted row's email case, an email change, \
                 free_email) will be refused"
            );
        }
        let mut sql = TargetTableSql::new(m, &columns);
        sql.hash_joins = !indexed;
        let _ = self.statements.set(sql);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_no_retry_changes_is_a_setup_problem() {
        let lost = sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into());
        assert!(setup_problem(&lost).is_none());
        let modified = sqlx::Error::Migrate(Box::new(MigrateError::VersionMismatch(3)));
        assert!(matches!(
            SetupError::from(modified),
            SetupError::Mismatch(_)
        ));
        let wrapped = MigrateError::Execute(sqlx::Error::PoolTimedOut);
        assert!(setup_problem(&sqlx::Error::Migrate(Box::new(wrapped))).is_none());
    }
}
