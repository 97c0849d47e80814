//! Signed events (EVENT_SIGNING_KEYS): only a configured key's signature is applied, a
//! signed body cannot be replayed under another routing key, and the service's own
//! retries stay valid.

use super::*;
use crate::support::*;
use user_sync::signature::sign;

const OLD: &str = "old-key-0123456789abcdef";

const NEW: &str = "new-key-0123456789abcdef";

/// With EVENT_SIGNING_KEYS set, events signed with any configured key (a rotation) are
/// applied, and unsigned or wrongly signed ones are dead-lettered without effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_events_signed_with_a_configured_key_are_applied() {
    let env = Env::new()
        .await
        .set("event_signing_keys", &format!("{NEW}, {OLD}"));
    let worker = env.start().await;
    let p = env.publisher().await;
    let body = |user| created(user).to_string();
    // Signed with either key (rotation): applied.
    for (user, key) in [(1, OLD), (2, NEW)] {
        let b = body(user);
        p.publish_with("user.created", b.as_bytes(), signed_by(key, b.as_bytes()))
            .await;
    }
    // Unsigned, signed with another key, and a signature of another body: dead-lettered.
    p.publish("user.created", body(3).as_bytes()).await;
    let stranger = sign(
        &"some-other-key-0123456".to_string().into(),
        body(4).as_bytes(),
    );
    p.publish_with("user.created", body(4).as_bytes(), signed_with(&stranger))
        .await;
    let replayed = sign(&NEW.to_string().into(), body(1).as_bytes());
    p.publish_with("user.created", body(5).as_bytes(), signed_with(&replayed))
        .await;

    let store = env.store();
    wait_for("signed applied", WAIT, || async {
        row(&store, 1).await.is_some() && row(&store, 2).await.is_some()
    })
    .await;
    env.wait_dead_letters(3, "bad ones dead-lettered", WAIT)
        .await;
    for user in 3..=5 {
        assert!(row(&store, user).await.is_none(), "user {user} not applied");
    }
    let (_, metrics) = http_get(worker.http, "/metrics").await;
    assert!(
        metrics.contains("user_sync_dead_letters_total{kind=\"bad_signature\"} 3"),
        "{metrics}"
    );
    let letters = env.dead_letters().await;
    let errors: Vec<String> = letters
        .iter()
        .filter_map(|d| header(d, "x-error"))
        .collect();
    assert!(
        errors.contains(&"no x-signature header".to_string()),
        "{errors:?}"
    );
    assert!(
        letters
            .iter()
            .all(|d| header(d, "x-error-kind").as_deref() == Some("bad_signature"))
    );

    // `user-sync send` signs with the first key, so smoke tests keep working.
    env.command(&[
        "send",
        "--email",
        "smoke@example.com",
        "--role",
        "teacher",
        "--user-id",
        &uid(6).to_string(),
    ])
    .ok();
    wait_for("sent event applied", WAIT, || async {
        row(&store, 6).await.is_some()
    })
    .await;
    worker.stop().await;
}

/// The HMAC covers the body; the routing key does not. A captured signed body republished
/// under another routing key must not take that key's effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_body_replayed_under_another_routing_key_changes_nothing() {
    let env = Env::new().await.set("event_signing_keys", NEW);
    let worker = env.start().await;
    let p = env.publisher().await;
    let key = NEW.to_string().into();
    let created = created(1).to_string();
    p.publish_with(
        "user.created",
        created.as_bytes(),
        signed_with(&sign(&key, created.as_bytes())),
    )
    .await;
    let store = env.store();
    wait_for("created", WAIT, || async { row(&store, 1).await.is_some() }).await;

    let typed = event(
        "user.updated",
        1,
        "2024-02-01T00:00:00Z",
        "student",
        &["lms"],
    );
    let mut untyped = typed.clone();
    untyped.as_object_mut().unwrap().remove("event_type");
    untyped["timestamp"] = "2024-03-01T00:00:00Z".into();
    for body in [typed.to_string(), untyped.to_string()] {
        let sig = sign(&key, body.as_bytes());
        p.publish_with("user.deleted", body.as_bytes(), signed_with(&sig))
            .await;
    }
    env.wait_dead_letters(2, "both replays dead-lettered", WAIT)
        .await;
    assert_eq!(row(&store, 1).await.map(|r| (r.0, r.1)), Some((true, None)));
    for letter in env.dead_letters().await {
        assert_eq!(
            header(&letter, "x-error-kind").as_deref(),
            Some("permanent")
        );
        assert_eq!(
            header(&letter, "x-routing-key").as_deref(),
            Some("user.deleted")
        );
    }
    worker.stop().await;
}

/// With signing on, a retried copy (back through the default exchange, with the service's
/// own `x-routing-key`) is verified again and accepted: an email conflict that never
/// resolves is dead-lettered as `email_conflict` after MAX_ATTEMPTS, not as a bad
/// signature or a type mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_event_survives_its_retries_and_dead_letters_for_its_own_cause() {
    const KEY: &str = "retry-key-0123456789abcdef";
    let env = Env::new().await.set("event_signing_keys", KEY);
    let worker = env.start().await;
    let p = env.publisher().await;
    let publish = |e: serde_json::Value| {
        let p = &p;
        async move {
            let body = e.to_string();
            let key = e["event_type"].as_str().unwrap().to_string();
            p.publish_with(&key, body.as_bytes(), signed_by(KEY, body.as_bytes()))
                .await;
        }
    };
    for u in [1, 2] {
        publish(created(u)).await;
    }
    let store = env.store();
    wait_for("created", WAIT, || async {
        active_of(&store, [1, 2]).await == 2
    })
    .await;
    publish(taking_email_of(1, 2, "2024-01-02T00:00:00Z")).await;
    wait_for("dead-lettered", WAIT, || async {
        dlq_depth(&env).await == 1
    })
    .await;
    worker.stop().await;
    let dead = env.dead_letters().await;
    assert_dead_letter(&dead[0], "email_conflict", 3);
}
