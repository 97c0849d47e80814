//! The outcome the worker reports for each event is the model's.

use crate::support::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// The worker's outcome for each event, one event per batch, is the reference model's:
/// an identical update, an identical inactive update and a newer identical event after a
/// revocation and a reactivation are `unchanged`, and backfills after a deletion that
/// change nothing are `backfilled`, not `unchanged`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_unchanged_agrees_with_the_model_event_by_event() {
    use user_sync::decide::model::{State, step};
    let env = Env::new().await;
    let store = env.store();
    let worker = env.start().await;
    let p = env.publisher().await;
    let e = |kind: &str, ts: &str, services: &[&str], active: bool, last: &str| {
        let mut e = event(kind, 1, &format!("2024-01-{ts}Z"), "student", services);
        e["user"]["is_active"] = active.into();
        e["user"]["last_name"] = last.into();
        e
    };
    let history = [
        e("user.created", "01T00:00:00", &["lms"], true, "A"), // applied
        e("user.updated", "02T00:00:00", &["lms"], true, "A"), // unchanged
        e("user.updated", "03T00:00:00", &["lms"], false, "A"), // deactivated
        e("user.updated", "04T00:00:00", &["lms"], false, "A"), // unchanged
        e("user.updated", "05T00:00:00", &["sat"], true, "A"), // deactivated (revoked)
        e("user.updated", "06T00:00:00", &["lms"], true, "A"), // reactivated
        e("user.updated", "07T00:00:00", &["lms"], true, "A"), // unchanged
        e("user.updated", "07T00:00:00", &["lms"], true, "B"), // the digest decides
        e("user.deleted", "09T00:00:00", &["lms"], true, "B"), // deactivated
        e("user.updated", "08T00:00:00", &["lms"], true, "C"), // backfilled
        e("user.updated", "08T00:00:00", &["lms"], true, "C"), // stale (the same event)
        e("user.updated", "08T12:00:00", &["lms"], true, "C"), // backfilled, no change
    ];
    let mut state = State::default();
    let mut expected = Vec::new();
    for (i, ev) in history.iter().enumerate() {
        let (outcome, next) = step(&planned(ev), &state);
        expected.push(outcome.as_str().to_string());
        state = next;
        p.publish_json(ev).await;
        wait_for("the event decided", WAIT, || async {
            store.trail(uid(1), 50).await.unwrap().len() == i + 1
        })
        .await;
    }
    worker.stop().await;
    let trail = store.trail(uid(1), 50).await.unwrap();
    let decisions: Vec<String> = trail.into_iter().rev().map(|t| t.decision).collect();
    assert_eq!(decisions, expected);
    assert!(
        expected.iter().filter(|d| *d == "unchanged").count() >= 3,
        "{expected:?}"
    );
    assert_eq!(expected.last().map(String::as_str), Some("backfilled"));
}
