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
    count(store, "SELECT count(*) FROM users WHERE is_active").await
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
    let hold = env.hold();
    wait_depth(&hold, held, "deletions held", WAIT).await;
    store.pool().close().await;
    hold
}

fn brake_cmd(env: &Env, args: &[&str]) -> (i32, String) {
    let out = env.command(&[&["brake"], args].concat());
    (out.code, out.text())
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

/// Creates `n` students and deletes them all; returns once every deletion was either
/// applied or parked (the number parked depends on how the replicas shared them).
async fn delete_until_settled(env: &Env, p: &Publisher, n: u32) -> u32 {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_window_and_a_release_applies_every_held_deactivation_once() {
    let env = Env::new()
        .await
        .set("deactivation_brake", "50")
        .set("prefetch", "20")
        .set("batch_size", "10");
    let (one, two) = (env.start().await, env.start().await);
    env.wait_consumers(2, "two consumers", WAIT).await;
    let p = env.publisher().await;
    // One window for the queue: the two replicas together apply at most 50 deletions
    // before the brake holds (it was 50 each, 100 in all, when each counted its own).
    let held = delete_until_settled(&env, &p, 200).await;
    assert!(held >= 150, "two replicas applied {} of 200", 200 - held);
    assert_eq!(release_within(&env).await, (held, 0));
    all_applied_once(&env, held).await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_release_header_does_not_pass_the_brake() {
    let env = Env::new().await.set("deactivation_brake", "1");
    let worker = env.start().await;
    let p = env.publisher().await;
    let hold = create_then_delete(&env, &p, 2, 1).await;
    let props = with_header(
        "x-brake-release",
        lapin::types::AMQPValue::LongString(uuid::Uuid::new_v4().to_string().into()),
    );
    p.publish_with(
        "user.created",
        student(9, "user.created", "2024-01-01T00:00:00Z")
            .to_string()
            .as_bytes(),
        lapin::BasicProperties::default(),
    )
    .await;
    let store = env.store();
    wait_for("created", WAIT, || async { active(&store).await == 2 }).await;
    let deleted = student(9, "user.deleted", "2024-02-01T00:00:00Z").to_string();
    p.publish_with("user.deleted", deleted.as_bytes(), props)
        .await;
    wait_depth(&hold, 2, "the forged one held too", WAIT).await;
    worker.stop().await;
}

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
