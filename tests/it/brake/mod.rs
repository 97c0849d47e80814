//! The mass-deactivation brake: past DEACTIVATION_BRAKE deactivations in the window, the
//! rest are parked in the hold queue until an operator releases them, whatever the
//! replicas, the batches and the failures around them.

mod failing_updates;
mod release;
mod replicas;
mod threshold;

use crate::support::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn student(n: u32, kind: &str, ts: &str) -> serde_json::Value {
    let id = uuid::Uuid::from_u128(0xb000_0000 + n as u128).to_string();
    serde_json::json!({
        "event_type": kind,
        "user_id": id,
        "user": {
            "id": id, "email": format!("brake{n}@example.com"), "first_name": "B",
            "last_name": "S", "password_hash": HASH, "role": "student", "is_active": true,
            "allowed_services_json": "[\"lms\"]",
        },
        "timestamp": ts,
    })
}

/// Creates `n` students, waits until all are active and publishes the deletion of each;
/// returns a store to watch them with.
async fn create_and_delete(env: &Env, p: &Publisher, n: u32) -> user_sync::store::Store {
    for i in 0..n {
        p.publish_json(&student(i, "user.created", "2024-01-01T00:00:00Z"))
            .await;
    }
    let store = env.store();
    wait_for("all active", WAIT, || async {
        active(&store).await == n as i64
    })
    .await;
    for i in 0..n {
        p.publish_json(&student(i, "user.deleted", "2024-02-01T00:00:00Z"))
            .await;
    }
    store
}

/// Creates `n` students, waits until all are active, deletes them all, and waits until
/// `held` deletions sit in the hold queue; returns its name.
async fn create_then_delete(env: &Env, p: &Publisher, n: u32, held: u32) -> String {
    let store = create_and_delete(env, p, n).await;
    let hold = env.hold();
    wait_depth(&hold, held, "deletions held", WAIT).await;
    store.pool().close().await;
    hold
}

fn brake_cmd(env: &Env, args: &[&str]) -> (i32, String) {
    let out = env.command(&[&["brake"], args].concat());
    (out.code, out.text())
}

/// Creates `n` students and deletes them all; returns once every deletion was either
/// applied or parked (the number parked depends on how the replicas shared them).
async fn delete_until_settled(env: &Env, p: &Publisher, n: u32) -> u32 {
    let store = create_and_delete(env, p, n).await;
    let (queue, hold) = (&env.broker.queue, env.hold());
    wait_for("every deletion applied or held", WAIT, || async {
        let held = queue_counts(&hold).await.map_or(0, |c| c.0);
        let waiting = queue_counts(queue).await.map_or(1, |c| c.0);
        waiting == 0 && held > 0 && i64::from(held) == active(&store).await
    })
    .await;
    let held = queue_counts(&hold).await.unwrap().0;
    store.pool().close().await;
    held
}

/// Releases within a bounded time (a release that never ends fails here); returns how
/// many deactivations it moved and how many it saw parked again.
async fn release_within(env: &Env) -> (u32, u32) {
    let out = env
        .command_within(&["brake", "release"], Duration::from_secs(45))
        .await;
    let text = out.stdout;
    assert!(out.success, "{text}");
    let number_before = |word: &str| -> u32 {
        let at = text.find(word).unwrap_or_else(|| panic!("{word}: {text}"));
        let digits = text[..at].trim_end().rsplit(' ').next().unwrap();
        digits.parse().unwrap_or_else(|_| panic!("{text}"))
    };
    let moved = text
        .split("moved ")
        .nth(1)
        .and_then(|t| t.split(' ').next());
    let moved = moved.and_then(|n| n.parse().ok()).expect(&text);
    (moved, number_before("parked again"))
}

async fn all_applied_once(env: &Env, held: u32) {
    let store = env.store();
    wait_for("all deactivated", WAIT, || async {
        active(&store).await == 0
    })
    .await;
    assert_eq!(
        queue_counts(&env.hold()).await.unwrap().0,
        0,
        "nothing parked again"
    );
    assert!(env.dead_letters().await.is_empty());
    let released: i64 =
        sqlx::query_scalar("SELECT count(*) FROM brake_log WHERE action = 'released'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(released, 1, "one release, {held} deactivations");
}

/// Engages the brake (threshold 1): deletes users 100 and 101, one is parked; waits until
/// the engagement is logged, so it survives a restart.
async fn engage_brake(env: &Env, p: &Publisher) {
    create_all(env, p, &[100, 101]).await;
    for u in [100, 101] {
        p.delete(u, "2024-01-05T00:00:00Z").await;
    }
    wait_for("one deletion parked", WAIT, || async {
        hold_depth(env).await == 1
    })
    .await;
    let store = env.store();
    wait_for("engagement logged", WAIT, || async {
        store.brake_last().await.unwrap().is_some_and(|e| e.engaged)
    })
    .await;
}
