//! One worker against the threshold: what passes, what is held, what a restart and a
//! release do with it.

use super::*;
use crate::support::*;
use std::time::Duration;

/// Past the default threshold (500 in 300 s) every deactivation is parked, the worker
/// reports not ready, the metrics and `brake status` say why, other events still flow, and
/// `brake release` applies every held one: a mass deletion upstream cannot lock a school out
/// unseen.
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

/// An engaged brake stays engaged across a restart; a restart with a raised threshold
/// disengages it, but what was held still waits for an operator's release.
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

/// A release of more held deactivations than the threshold applies each of them once and
/// parks none again: the release is the operator's decision, not a new batch for the brake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_applies_every_held_deactivation_once_when_more_than_the_threshold_were_held() {
    let env = Env::new().await.set("deactivation_brake", "50");
    let worker = env.start().await;
    let p = env.publisher().await;
    let held = delete_until_settled(&env, &p, 200).await;
    assert_eq!(held, 150);
    assert_eq!(release_within(&env).await, (150, 0));
    all_applied_once(&env, held).await;
    worker.stop().await;
}

/// A parked deactivation carries no expiration of the producer's: it waits in the hold queue
/// until released, however long that takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_deactivation_outlives_the_producers_expiration() {
    let env = Env::new().await.set("deactivation_brake", "1");
    let worker = env.start().await;
    let p = env.publisher().await;
    let store = env.store();
    for i in 0..2 {
        p.publish_json(&student(i, "user.created", "2024-01-01T00:00:00Z"))
            .await;
    }
    wait_for("created", WAIT, || async { active(&store).await == 2 }).await;
    let ttl = Duration::from_millis(300);
    for i in 0..2 {
        let body = student(i, "user.deleted", "2024-02-01T00:00:00Z").to_string();
        let props = lapin::BasicProperties::default().with_expiration("300".into());
        p.publish_with("user.deleted", body.as_bytes(), props).await;
    }
    let hold = env.hold();
    wait_depth(&hold, 1, "one held", WAIT).await;
    // What is tested is time passing: the producer's TTL must be long gone.
    tokio::time::sleep(ttl * 4).await;
    let held = get_all(&hold).await;
    assert_eq!(held.len(), 1, "the held deactivation expired");
    assert_eq!(held[0].properties.expiration(), &None);
    worker.stop().await;
}
