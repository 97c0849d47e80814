//! Deactivations behind updates that fail in the same batch: the failure makes the worker
//! apply a user's events apart, and each deactivation among them still meets the brake.

use super::*;
use crate::support::*;

/// With the brake engaged, a user's deletion followed in the same batch by an update that
/// fails (an email conflict) is parked, not applied. Otherwise any deletion with a failing
/// update behind it slips past an engaged brake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_deletion_behind_a_failing_update_is_parked_by_an_engaged_brake() {
    let env = Env::new()
        .await
        .set("deactivation_brake", "1")
        .set("batch_max_wait_ms", "500");
    let worker = env.start().await;
    let p = env.publisher().await;
    create_all(&env, &p, &[1, 2]).await;
    engage_brake(&env, &p).await;
    worker.stop().await;

    // One batch: user 1 deleted at t2, then (t3) an update taking user 2's email.
    p.delete(1, "2024-01-06T00:00:00Z").await;
    p.publish_json(&taking_email_of(1, 2, "2024-01-07T00:00:00Z"))
        .await;
    let worker = env.start().await;
    // A held user's events are parked together: the deletion and the update after it.
    // In one batch both events are parked together. Should the worker cut them into two
    // batches, the deletion is parked alone and the update, not a deactivation, meets its
    // email conflict and is dead-lettered. Either way the deletion is not applied.
    wait_for("user 1's events settled", WAIT, || async {
        let (held, dead) = (hold_depth(&env).await, dlq_depth(&env).await);
        (held, dead) == (3, 0) || (held, dead) == (2, 1)
    })
    .await;
    worker.stop().await;
    let store = env.store();
    let (active, reason, _) = row(&store, 1).await.unwrap();
    assert!(
        active,
        "the brake is engaged: user 1's deletion must be parked, not applied (reason {reason:?})"
    );
}

/// Threshold 2, one batch of six users each deleted and then given a conflicting update:
/// at most two are deactivated, however the worker cuts and retries the batch. A buggy
/// upstream that deletes users and re-sends a stale email (a common shape of bug) must not
/// take a whole school out in one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_behind_failing_updates_respect_the_threshold() {
    let env = Env::new()
        .await
        .set("deactivation_brake", "2")
        .set("batch_max_wait_ms", "500");
    let victims: Vec<u8> = (1..=6).collect();
    let owners: Vec<u8> = (11..=16).collect();
    let worker = env.start().await;
    let p = env.publisher().await;
    create_all(&env, &p, &[victims.clone(), owners.clone()].concat()).await;
    worker.stop().await;
    for &u in &victims {
        p.delete(u, "2024-01-06T00:00:00Z").await;
        p.publish_json(&taking_email_of(u, u + 10, "2024-01-07T00:00:00Z"))
            .await;
    }
    let worker = env.start().await;
    // In one batch: two users admitted (their deletion applied, their update
    // dead-lettered), four parked with both their events. However the worker cuts the
    // batches, every one of the 12 events ends applied, parked or dead-lettered.
    let store = env.store();
    wait_for("the 12 events settled", WAIT, || async {
        let deactivated = victims.len() - active_of(&store, victims.iter().copied()).await;
        dlq_depth(&env).await as usize + hold_depth(&env).await as usize + deactivated == 12
    })
    .await;
    worker.stop().await;
    let deactivated = victims.len() - active_of(&store, victims.iter().copied()).await;
    assert!(
        deactivated <= 2,
        "DEACTIVATION_BRAKE=2 but {deactivated} users were deactivated; held: {}",
        hold_depth(&env).await
    );
}

/// With the brake engaged, a user's batch [t2 rename, t3 update the backend refuses, t4
/// delete] is parked whole, the older rename included; after `brake release` the table is
/// the rename and the deletion applied, the refused update dead-lettered. An older event
/// of a held user acknowledged as superseded would be lost, and the table would not be
/// what timestamp order gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_users_older_events_are_parked_with_it_and_applied_after_release() {
    let env = Env::new()
        .await
        .set("deactivation_brake", "1")
        .set("batch_max_wait_ms", "500");
    let store = env.store();
    store.migrate().await.unwrap();
    refusing_trigger(&store).await;
    let worker = env.start().await;
    let p = env.publisher().await;
    create_all(&env, &p, &[1]).await;
    engage_brake(&env, &p).await;
    worker.stop().await;

    let mut rename = event(
        "user.updated",
        1,
        "2024-01-06T00:00:00Z",
        "student",
        &["lms"],
    );
    rename["user"]["last_name"] = "Kept".into();
    let mut refused = event(
        "user.updated",
        1,
        "2024-01-07T00:00:00Z",
        "student",
        &["lms"],
    );
    refused["user"]["last_name"] = "Kept".into();
    refused["user"]["first_name"] = "Refused".into();
    p.publish_json(&rename).await;
    p.publish_json(&refused).await;
    p.delete(1, "2024-01-08T00:00:00Z").await;
    let worker = env.start().await;
    // In one batch all three are parked. Should the worker cut them into batches without
    // a deactivation, the rename is applied and the refused update dead-lettered there;
    // either way each of the three events ends parked, dead-lettered or applied.
    wait_for("user 1's three events settled", WAIT, || async {
        let renamed = last_name(&store, 1).await.as_deref() == Some("Kept");
        hold_depth(&env).await - 1 + dlq_depth(&env).await + u32::from(renamed) == 3
    })
    .await;
    let held = hold_depth(&env).await as usize;
    let released = user_sync::ops::brake::release(&env.settings())
        .await
        .unwrap();
    assert_eq!(released.moved, held);
    wait_for("user 1 deactivated", WAIT, || async {
        row(&store, 1).await.is_some_and(|r| !r.0)
    })
    .await;
    wait_for("the refused update dead-lettered", WAIT, || async {
        dlq_depth(&env).await == 1
    })
    .await;
    worker.stop().await;
    assert_eq!(
        last_name(&store, 1).await.as_deref(),
        Some("Kept"),
        "t2 (rename) was acked as stale while its user was parked, and t3 never applied"
    );
}
