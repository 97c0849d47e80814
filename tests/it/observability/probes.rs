//! The probes and the metrics endpoint: `/healthz` follows the worker's own progress and
//! never a dependency; `/readyz` follows the dependencies; `user-sync healthcheck` asks
//! `/healthz`; `/metrics` counts every outcome.

use crate::support::*;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// Samples `/healthz` every 100 ms until stopped; returns every answer that was not 200.
fn sample_healthz(
    http: std::net::SocketAddr,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<(u16, String)>> {
    tokio::spawn(async move {
        let mut bad = Vec::new();
        while !stop.is_cancelled() {
            let (code, body) = http_get(http, "/healthz").await;
            if code != 200 {
                bad.push((code, body));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bad
    })
}

async fn wait_readyz(worker: &Worker, code: u16, what: &str, limit: Duration) -> String {
    let last = std::sync::Mutex::new(String::new());
    wait_for(what, limit, || async {
        let (got, body) = http_get(worker.http, "/readyz").await;
        *last.lock().unwrap() = body;
        got == code
    })
    .await;
    last.into_inner().unwrap()
}

/// The broker unreachable, then the database refused, then both: `/readyz` turns 503 each
/// time, `/healthz` answers 200 throughout. The stall bound is 3 s, shorter than the
/// reconnect backoff (to 30 s), the database wait's backoff (to 10 s) and the 20 s a batch
/// is held through an outage: only waits that tick keep it fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_stays_200_through_broker_and_database_outages_while_readyz_turns_503() {
    let proxy = BrokerProxy::start().await;
    let env = Env::new()
        .await
        .set("rabbitmq_url", &proxy.url())
        .set("health_stall_secs", "3");
    let worker = env.start().await;
    wait_readyz(&worker, 200, "ready", Duration::from_secs(10)).await;
    let stop = CancellationToken::new();
    let sampler = sample_healthz(worker.http, stop.clone());

    // The broker unreachable: the worker reconnects with a growing backoff.
    proxy.close().await;
    let reason = wait_readyz(&worker, 503, "not ready: broker", Duration::from_secs(10)).await;
    assert!(reason.contains("broker"), "{reason}");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(http_get(worker.http, "/readyz").await.0, 503);

    // Back, then the database refused; an event in hand is held, then handed back.
    proxy.reopen();
    wait_readyz(&worker, 200, "ready again", Duration::from_secs(40)).await;
    set_connections(&env.db.name, false).await;
    let reason = wait_readyz(&worker, 503, "not ready: database", Duration::from_secs(10)).await;
    assert!(reason.contains("database"), "{reason}");
    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(http_get(worker.http, "/readyz").await.0, 503);

    // Both down at once.
    proxy.close().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(http_get(worker.http, "/readyz").await.0, 503);

    // Everything back: ready again and the held event applied.
    proxy.reopen();
    set_connections(&env.db.name, true).await;
    wait_readyz(&worker, 200, "ready after both", Duration::from_secs(60)).await;
    let store = env.store();
    wait_for("event applied", Duration::from_secs(30), || async {
        row(&store, 1).await.is_some()
    })
    .await;

    stop.cancel();
    let bad = sampler.await.unwrap();
    let first: Vec<_> = bad.iter().take(3).collect();
    let n = bad.len();
    assert!(
        n == 0,
        "/healthz failed {n} times during the outages: {first:?}"
    );
    worker.stop().await;
}

/// `user-sync healthcheck` with nothing but `HTTP_ADDR` set (no `SERVICE_NAME`, no
/// database): 0 against a running worker bound to 0.0.0.0, 1 once nothing listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_against_a_running_worker_and_1_when_nothing_listens() {
    let env = Env::new().await.set("http_addr", "0.0.0.0:0");
    let worker = env.start().await;
    let addr = format!("0.0.0.0:{}", worker.http.port());
    let probe = |addr: &str| {
        let mut cmd = binary();
        cmd.env("HTTP_ADDR", addr).arg("healthcheck");
        run_within(cmd, Duration::from_secs(10))
    };
    let up = probe(&addr).await;
    assert_eq!(up.code, 0, "{}", up.text());
    worker.stop().await;

    // The same port, nothing listening any more.
    let down = probe(&addr).await;
    assert_eq!(down.code, 1, "{}", down.text());
    assert!(down.stderr.contains("unhealthy"), "{}", down.text());

    // An invalid HTTP_ADDR is a failure too, never a pass.
    let bad = probe("not-an-address").await;
    assert_ne!(bad.code, 0, "{}", bad.text());
}

/// `/healthz`, `/readyz` and `/metrics` report liveness, readiness and a count for each
/// outcome, and the metrics carry no hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_report_liveness_readiness_and_metrics() {
    let env = Env::new().await;
    let worker = env.start().await;
    assert_eq!(http_get(worker.http, "/healthz").await.0, 200);
    wait_for("ready", WAIT, || async {
        http_get(worker.http, "/readyz").await.0 == 200
    })
    .await;

    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    p.create_student(2, &["sat"]).await;
    p.publish("user.updated", b"{not json").await;
    wait_for("three outcomes counted", WAIT, || async {
        metric(
            worker.http,
            "user_sync_events_total{outcome=\"dead-lettered\"}",
        )
        .await
            == Some(1.0)
    })
    .await;
    let m = |l: &'static str| metric(worker.http, l);
    assert_eq!(
        m("user_sync_events_total{outcome=\"applied\"}").await,
        Some(1.0)
    );
    let skipped = "user_sync_events_total{outcome=\"not-for-this-service\"}";
    assert_eq!(m(skipped).await, Some(1.0));
    let created = "user_sync_events_received_total{event_type=\"user.created\"}";
    assert_eq!(m(created).await, Some(2.0));
    let permanent = "user_sync_dead_letters_total{kind=\"permanent\"}";
    assert_eq!(m(permanent).await, Some(1.0));
    assert_eq!(
        m("user_sync_delivery_to_commit_seconds_count").await,
        Some(2.0)
    );
    assert_eq!(m("user_sync_broker_connected ").await, Some(1.0));
    assert_eq!(m("user_sync_database_up ").await, Some(1.0));
    assert_eq!(m("user_sync_paused ").await, Some(0.0));
    let last = m("user_sync_last_commit_timestamp_seconds ").await;
    assert!(last.is_some_and(|t| t > 1.7e9), "{last:?}");
    let (_, text) = http_get(worker.http, "/metrics").await;
    assert!(
        text.contains("# TYPE user_sync_batch_size histogram"),
        "{text}"
    );
    assert!(!text.contains(HASH));
    worker.stop().await;
}

/// `/readyz` is 503 naming the database while it refuses connections, and 200 again after;
/// `/healthz` stays 200 throughout, so an outage does not get the pod restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_while_the_database_refuses_and_200_after() {
    let env = Env::new().await;
    let worker = env.start().await;
    wait_for("ready", WAIT, || async {
        http_get(worker.http, "/readyz").await.0 == 200
    })
    .await;
    set_connections(&env.db.name, false).await;
    wait_for("not ready", WAIT, || async {
        let (code, body) = http_get(worker.http, "/readyz").await;
        code == 503 && body.contains("database")
    })
    .await;
    assert_eq!(
        http_get(worker.http, "/healthz").await.0,
        200,
        "still alive"
    );
    set_connections(&env.db.name, true).await;
    wait_for("ready again", WAIT, || async {
        http_get(worker.http, "/readyz").await.0 == 200
    })
    .await;
    worker.stop().await;
}
