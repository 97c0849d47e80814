//! The embedded migrations, run so that a rollback starts: a schema that a later release
//! migrated further is used as it is (docs/migrations.md).

use sqlx::PgPool;
use sqlx::migrate::Migrator;

/// Migrations recorded in the database that this build does not know are let through:
/// a later release applied them, and they only expand the schema (scripts/check-migrations
/// holds every migration to that). A known migration whose file changed after it was
/// applied is still refused (its checksum).
static MIGRATOR: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations")
};

/// Applies the embedded migrations, then names each applied one this build does not know.
pub(crate) async fn run(pool: &PgPool) -> Result<(), sqlx::Error> {
    MIGRATOR.run(pool).await?;
    for (version, description) in unknown(pool).await? {
        tracing::warn!(
            version,
            description,
            "the database has a migration this release does not know (a later release \
             applied it); running on its expanded schema"
        );
    }
    Ok(())
}

/// Applied migrations that are not among the embedded ones, oldest first.
async fn unknown(pool: &PgPool) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await?;
    Ok(applied
        .into_iter()
        .filter(|(version, _)| !MIGRATOR.version_exists(*version))
        .collect())
}
