//! The mass-deactivation brake against the real services.

use crate::helpers::*;
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

async fn active(store: &user_sync::store::Store) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM users WHERE is_active")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Creates `n` students, waits until all are active, deletes them all, and waits until
/// `held` deletions sit in the hold queue; returns its name.
async fn create_then_delete(env: &Env, p: &Publisher, n: u32, held: u32) -> String {
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
    let hold = format!("{}.hold", env.broker.queue);
    wait_for("deletions held", WAIT, || async {
        queue_counts(&hold).await.is_some_and(|(m, _)| m == held)
    })
    .await;
    store.pool().close().await;
    hold
}

fn brake_cmd(env: &Env, args: &[&str]) -> (i32, String) {
    let out = env.binary().arg("brake").args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_501st_deactivation_is_held_until_released_and_nothing_is_lost() {
    let env = Env::new().await; // DEACTIVATION_BRAKE defaults to 500 in 300 s
    let worker = env.start().await;
    let p = env.publisher().await;
    let store = env.store();
    let hold = create_then_delete(&env, &p, 510, 10).await;
    assert_eq!(active(&store).await, 10, "exactly 500 deactivated");
    let (code, body) = http_get(worker.http, "/readyz").await;
    assert_eq!(code, 503);
    assert!(body.contains("brake"), "{body}");
    let (_, metrics) = http_get(worker.http, "/metrics").await;
    assert!(metrics.contains("user_sync_deactivation_brake_engaged 1"));
    assert!(metrics.contains("user_sync_events_total{outcome=\"held\"} 10"));
    let (_, status) = brake_cmd(&env, &["status"]);
    assert!(
        status.contains("ENGAGED") && status.contains("10 held"),
        "{status}"
    );

    // Other events still flow while the brake holds.
    p.publish_json(&student(600, "user.created", "2024-03-01T00:00:00Z"))
        .await;
    wait_for("a create applied", WAIT, || async {
        active(&store).await == 11
    })
    .await;

    let (code, out) = brake_cmd(&env, &["release"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("brake released; moved 10"), "{out}");
    wait_for("all deactivated", WAIT, || async {
        active(&store).await == 1
    })
    .await;
    wait_for("ready again", WAIT, || async {
        http_get(worker.http, "/readyz").await.0 == 200
    })
    .await;
    assert_eq!(queue_counts(&hold).await.unwrap().0, 0);
    assert!(env.dead_letters().await.is_empty());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engaged_brake_survives_a_restart_unless_the_threshold_was_raised() {
    let env = Env::new().await.set("deactivation_brake", "3");
    let worker = env.start().await;
    let p = env.publisher().await;
    let store = env.store();
    create_then_delete(&env, &p, 5, 2).await;
    // The engagement is logged in the background; wait until it is, then restart.
    wait_for("engagement logged", WAIT, || async {
        store.brake_last().await.unwrap().is_some_and(|e| e.engaged)
    })
    .await;
    worker.stop().await;

    let worker = env.start().await;
    wait_for("still engaged", WAIT, || async {
        http_get(worker.http, "/readyz").await.1.contains("brake")
    })
    .await;
    worker.stop().await;

    let raised = Env {
        overrides: [("deactivation_brake".to_string(), "10".to_string())].into(),
        ..env
    };
    let worker = raised.start().await;
    wait_for("released by the raise", WAIT, || async {
        http_get(worker.http, "/readyz").await.0 == 200
    })
    .await;
    assert_eq!(
        active(&store).await,
        2,
        "the held ones wait for an operator"
    );
    let (code, out) = brake_cmd(&raised, &["release"]);
    assert_eq!(code, 0);
    assert!(out.contains("the brake was not engaged; moved 2"), "{out}");
    wait_for("all deactivated", WAIT, || async {
        active(&store).await == 0
    })
    .await;
    worker.stop().await;
}
