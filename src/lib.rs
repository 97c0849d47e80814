//! user-sync: keeps a backend's users in step with the central auth system's events.
//!
//! The pure core (`event`, `membership`, `decide`) imports no adapter; the adapters
//! (`broker`, `store`) decide nothing; `pipeline` and `worker` join them.

pub mod backoff;
pub mod broker;
pub mod decide;
pub mod error;
pub mod event;
pub mod membership;
pub mod pipeline;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod worker;

use settings::Settings;
use std::sync::Arc;
use store::Store;
use tokio_util::sync::CancellationToken;

/// The assembled service, the same for `main` and for the tests.
pub struct App {
    pub settings: Arc<Settings>,
    pub store: Store,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(sqlx::Error),
}

/// Wires the adapters together. Does no I/O: the database may still be down.
pub fn build(settings: Settings) -> Result<App, StartError> {
    let store = Store::new(&settings)?;
    Ok(App {
        settings: Arc::new(settings),
        store,
    })
}

/// Waits for the database, applies the migrations, then consumes until `shutdown` fires.
pub async fn run(app: App, shutdown: CancellationToken) -> Result<(), StartError> {
    let pipeline = pipeline::Pipeline::new(app.settings.clone(), app.store.clone());
    if !pipeline.wait_for_database(&shutdown).await {
        return Ok(());
    }
    app.store.migrate().await.map_err(StartError::Migrate)?;
    tracing::info!(settings = ?app.settings, "user-sync started");
    worker::run(pipeline, shutdown).await;
    app.store.pool().close().await;
    tracing::info!("user-sync stopped");
    Ok(())
}
