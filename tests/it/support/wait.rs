//! Waiting on a condition, never on the clock alone.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Polls `check` until it holds, failing the test after `limit`.
pub(crate) async fn wait_for<F, Fut>(what: &str, limit: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(within(limit, check).await, "timed out waiting for {what}");
}

/// Polls `check` until it holds (true) or `limit` passes (false).
pub(crate) async fn within<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
