//! What the service costs the database: an event, a batch or a reconcile that changes
//! nothing leaves every row version as it was (no new version, not even a row lock, each
//! of which is a WAL record that replicas replay and backups archive).

mod locks;
mod target_table;
mod unchanged;

use crate::support::planned;
use user_sync::decide::{self, Planned};
use user_sync::store::{EventResult, Store};

/// Applies `events` as one batch and returns each event's result in event order.
async fn apply(store: &Store, events: &[serde_json::Value]) -> Vec<EventResult> {
    let planned: Vec<Planned> = events.iter().map(planned).collect();
    let (users, _) = decide::reduce(&planned);
    let mut results = store.apply(&planned, &users).await.unwrap();
    results.sort_by_key(|r| r.0);
    results.into_iter().map(|r| r.1).collect()
}
