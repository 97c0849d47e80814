//! Faults the worker meets and outlives: outages of the database and the broker, kills,
//! poison, a table locked; and failures inside a batch, which take no other event with
//! them.

mod isolation;
mod outages;
mod refusals;

use crate::support::*;
use std::time::Duration;
use user_sync::decide::{self, Planned};
use user_sync::pipeline::isolate_failures;
use user_sync::store::{Commit, EventResult, Store};

const WAIT: Duration = Duration::from_secs(60);

/// The first `n` events of `churn_stream`, published newest first: timestamps rise with
/// the index, the order they arrive in does not.
fn stream(n: usize) -> Vec<serde_json::Value> {
    churn_stream(n).into_iter().map(|(_, e)| e).rev().collect()
}

/// Waits until the table is what `events` leave, by the model.
async fn converged(env: &Env, events: &[serde_json::Value]) {
    let want = model_states(events);
    let store = env.store();
    wait_for("table converged", WAIT, || async {
        store.states().await.is_ok_and(|s| s == want)
    })
    .await;
}

/// Applies `events` as one batch, the way the worker does.
async fn apply_batch(store: &Store, events: &[serde_json::Value]) -> Vec<(usize, EventResult)> {
    let planned: Vec<Planned> = events.iter().map(planned).collect();
    let (users, losers) = decide::reduce(&planned);
    let mut results = isolate_failures(store, &planned, &users, &losers, Commit::Yes, None)
        .await
        .unwrap();
    results.sort_by_key(|(i, _)| *i);
    results
}

/// User 1 and user 2 active; user 2's email is what the failing update of user 1 wants.
async fn two_users(store: &Store) {
    store.migrate().await.unwrap();
    let created = [1, 2].map(created);
    apply_batch(store, &created).await;
}
