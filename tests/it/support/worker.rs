//! The real worker (`user_sync::build` + `run`) inside the test process.

use super::test_log;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use user_sync::settings::Settings;

pub(crate) struct Worker {
    pub(crate) shutdown: CancellationToken,
    pub(crate) task: JoinHandle<Result<(), user_sync::StartError>>,
    pub(crate) http: std::net::SocketAddr,
}

impl Worker {
    /// Starts the worker with `settings` and returns at once, whether it can reach the
    /// broker or not.
    pub(crate) fn spawn(settings: Settings) -> Self {
        if test_log() {
            install_test_subscriber();
        }
        let shutdown = CancellationToken::new();
        let app = user_sync::build(settings).unwrap();
        let http = app.http_addr();
        let task = tokio::spawn(user_sync::run(app, shutdown.clone()));
        Worker {
            shutdown,
            task,
            http,
        }
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("worker stops within 15 s")
            .expect("worker task")
            .expect("worker ran cleanly");
    }
}

/// The in-process worker's logs through the test writer (shown with a failing test's
/// output), installed once for the whole binary: `TEST_LOG=1`.
pub(crate) fn install_test_subscriber() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=warn,sqlx=warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
