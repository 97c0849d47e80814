//! The HTTP adapter: liveness, readiness and metrics for the orchestrator and Prometheus.

use crate::health::Watchdog;
use crate::metrics::Metrics;
use crate::store::Store;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A readiness probe must answer within the orchestrator's timeout (often 1 s), even when
/// the database hangs rather than refuses.
const DB_PROBE_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Clone)]
struct Http {
    metrics: Arc<Metrics>,
    store: Store,
    watchdog: Arc<Watchdog>,
}

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    store: Store,
    watchdog: Arc<Watchdog>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(Http {
            metrics,
            store,
            watchdog,
        });
    let stopped = shutdown.cancelled_owned();
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!(%error, "http server failed");
    }
}

/// Alive: the worker's loops tick the watchdog (see `health`). Restarting would not fix a
/// broker or database outage, nor an engaged brake, so none of them is checked here: in the
/// sidecar form a failing liveness probe restarts this container and takes the Pod (the
/// backend's too) out of Ready while it restarts.
async fn healthz(State(s): State<Http>) -> impl IntoResponse {
    match s.watchdog.stalled() {
        None => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Some(age) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "stalled",
                "reason": format!("the worker has not made progress for {} s", age.as_secs()),
            })),
        ),
    }
}

/// Ready: consuming from the broker, the database answering, no brake engaged.
async fn readyz(State(s): State<Http>) -> impl IntoResponse {
    let reason = if !s.metrics.broker_connected() {
        Some("not consuming: broker connection or consumer missing")
    } else if !s.metrics.database_up() {
        Some("paused: database unavailable")
    } else if s.metrics.brake_engaged() {
        Some("deactivation brake engaged: run `user-sync brake release` after checking")
    } else {
        match tokio::time::timeout(DB_PROBE_TIMEOUT, s.store.ping()).await {
            Ok(Ok(())) => None,
            _ => Some("database not answering"),
        }
    };
    match reason {
        None => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": reason})),
        ),
    }
}

async fn render_metrics(State(s): State<Http>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}
