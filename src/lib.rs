//! user-sync: keeps a backend's users in step with the central auth system's events.
//!
//! Layers, each module importing only modules listed before it (unit tests aside; checked
//! by `layers_tests`):
//! 1. Pure core, no I/O: `redact`, `backoff`, `signature`, `disposition`, `event`,
//!    `membership`, `decide`, `target_table`.
//! 2. Configuration: `settings`, `telemetry`.
//! 3. Adapters, which decide nothing: `tls` (a client certificate, for the next two),
//!    `headers`, `broker`, `store`, `metrics`, `health`, `http`.
//! 4. Below both the pipeline and the worker: `pause` (a database outage waited out),
//!    `brake` (the mass-deactivation brake).
//! 5. `pipeline`: a batch from its deliveries to its acknowledgement.
//! 6. `worker`, the consume loop that drives the pipeline; beside it `ops`, the operator's
//!    commands, which use the pipeline and never the worker.
//!
//! Above them all: this file (`build`, `run`) and the binary (`main.rs`, `cli`).

pub mod backoff;
pub mod brake;
pub mod broker;
pub mod decide;
pub mod disposition;
pub mod event;
pub mod headers;
pub mod health;
mod http;
pub mod membership;
pub mod metrics;
pub mod ops;
pub mod pause;
pub mod pipeline;
pub mod redact;
pub mod settings;
pub mod signature;
pub mod store;
pub mod target_table;
pub mod telemetry;
mod tls;
pub mod worker;

#[cfg(test)]
mod layers_tests;

use backoff::Backoff;
use health::Watchdog;
use metrics::Metrics;
use settings::Settings;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::{SetupError, Store};
use tokio_util::sync::CancellationToken;

/// The assembled service, the same for `main` and for the tests.
pub struct App {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Ticked by the worker's loops; `/healthz` fails when it goes stale.
    pub watchdog: Arc<Watchdog>,
    http: std::net::TcpListener,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(sqlx::Error),
    #[error("HTTP_ADDR: cannot listen on {0}: {1}")]
    Http(SocketAddr, std::io::Error),
    /// A setting the database or a pooler refuses: exit 2 with the reason, never a pause.
    #[error("{0}")]
    Config(String),
    /// The target table (`[target]`) does not fit the database: one line per problem.
    #[error("the [target] table does not fit the database:\n{}", .0.join("\n"))]
    TargetTable(Vec<String>),
}

/// Wires the adapters together and binds the HTTP port (so a port taken fails at start,
/// and tests can ask for port 0 and read the one they got). Talks to neither the broker
/// nor the database: either may still be down.
pub fn build(settings: Settings) -> Result<App, StartError> {
    // A URL or TLS file the store cannot use is a setting to fix, as at load.
    let store = Store::new(&settings).map_err(|e| match e {
        sqlx::Error::Configuration(why) => StartError::Config(why.to_string()),
        e => StartError::Database(e),
    })?;
    let addr = settings.http_addr;
    let http = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| StartError::Http(addr, e))?;
    Ok(App {
        watchdog: Arc::new(Watchdog::new(settings.health_stall)),
        settings: Arc::new(settings),
        store,
        metrics: Arc::new(Metrics::new()),
        http,
    })
}

impl App {
    /// Where the HTTP endpoints answer.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("a bound listener has an address")
    }
}

/// Serves HTTP, waits for the database, applies the migrations, then consumes until
/// `shutdown` fires.
pub async fn run(app: App, shutdown: CancellationToken) -> Result<(), StartError> {
    let addr = app.http_addr();
    let listener =
        tokio::net::TcpListener::from_std(app.http).map_err(|e| StartError::Http(addr, e))?;
    let http_stop = CancellationToken::new();
    let server = tokio::spawn(http::serve(
        listener,
        app.metrics.clone(),
        app.store.clone(),
        app.watchdog.clone(),
        http_stop.clone(),
    ));
    tracing::info!(%addr, "http listening");
    let worker = assemble(&app.settings, &app.store, &app.metrics, &app.watchdog);
    let result = async {
        if let Err(e) = app.store.ping().await
            && let Some(problem) = store::config_problem(&e)
        {
            return Err(StartError::Config(problem));
        }
        if !start_up(&worker, &shutdown).await? {
            return Ok(());
        }
        tracing::info!(settings = ?app.settings, "user-sync started");
        // Its own token: a refused broker ends the worker without a shutdown.
        let pruning = shutdown.child_token();
        let pruner = tokio::spawn(prune_audit(
            app.store.clone(),
            app.settings.audit_retention_days,
            pruning.clone(),
        ));
        let refused = worker.run(shutdown).await;
        pruning.cancel();
        let _ = pruner.await;
        refused.map_err(|e| StartError::Config(e.to_string()))
    }
    .await;
    // The endpoints stay up until the consumer has drained, so a probe sees the shutdown.
    http_stop.cancel();
    let _ = server.await;
    app.store.pool().close().await;
    tracing::info!("user-sync stopped");
    result
}

/// Waits for the database, then sets it up: the session checked (before anything else
/// touches the database: through a pooler in transaction mode the migrations would run in
/// the wrong session), the migrations, the schema's claim, the target table, the brake's
/// state. An outage on the way (a read-only database, a lost connection, a lock timeout) is
/// waited out with capped backoff; only a setting that does not fit ends the start (exit 2).
/// Each wait ticks the watchdog, so a startup probe on /healthz passes however long the
/// database takes (readiness and `user_sync_paused` say why). False if shut down first.
async fn start_up(
    worker: &worker::Worker,
    shutdown: &CancellationToken,
) -> Result<bool, StartError> {
    let (dog, store) = (&worker.watchdog, &worker.store);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        if !dog
            .waiting(worker.pause.wait_for_database(store, shutdown))
            .await
        {
            return Ok(false);
        }
        let attempt = async {
            store.verify_session().await?;
            store.set_up().await?;
            worker.brake.restore().await.map_err(SetupError::from)
        };
        let done = tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            done = dog.waiting(attempt) => done,
        };
        match done {
            Ok(()) => return Ok(true),
            Err(SetupError::Config(problem)) => return Err(StartError::Config(problem)),
            Err(SetupError::TargetTable(problems)) => {
                let lines = problems.iter().map(ToString::to_string).collect();
                return Err(StartError::TargetTable(lines));
            }
            Err(SetupError::Mismatch(e)) => return Err(StartError::Migrate(e)),
            Err(SetupError::Absent(problem)) => {
                tracing::warn!(
                    %problem,
                    "waiting for the backend's migrations to create the [target] table"
                );
            }
            Err(SetupError::Outage(error)) => {
                worker.metrics.set_database(false);
                tracing::warn!(%error, "cannot set up the database yet; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            _ = dog.waiting(tokio::time::sleep(backoff.next_delay())) => {}
        }
    }
}

/// The supervisor and what it owns, from the assembled service.
fn assemble(
    settings: &Arc<Settings>,
    store: &Store,
    metrics: &Arc<Metrics>,
    watchdog: &Arc<Watchdog>,
) -> worker::Worker {
    let (settings, store, metrics) = (settings.clone(), store.clone(), metrics.clone());
    let topo = Arc::new(broker::Topology::new(&settings));
    let brake = brake::Brake::new(&settings, store.clone(), metrics.clone(), &topo.hold);
    let pipeline = pipeline::Pipeline::new(
        settings.clone(),
        store.clone(),
        metrics.clone(),
        brake.clone(),
        topo.clone(),
    );
    worker::Worker {
        topo,
        pause: pause::Pause::new(metrics.clone()),
        settings,
        store,
        metrics,
        brake,
        pipeline,
        watchdog: watchdog.clone(),
    }
}

/// How often old audit rows are pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Prunes the audit trail in the background, in small deletes that never hold up the
/// consumer; a failure is logged and tried again next time.
async fn prune_audit(store: Store, days: u32, shutdown: CancellationToken) {
    if days == 0 {
        return;
    }
    loop {
        match store.prune_audit(days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, days, "pruned the audit trail"),
            Err(error) => tracing::warn!(%error, "pruning the audit trail failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}
