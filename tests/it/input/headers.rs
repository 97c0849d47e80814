//! Headers a producer sets that only the service's own copies may carry: a routing key,
//! an attempt count.

use super::*;
use crate::support::*;
use lapin::types::AMQPValue;

/// An `x-routing-key` header set by a producer is ignored: the event is applied as the type
/// it was published as, not turned into a deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producers_x_routing_key_is_not_honoured() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    let mut update = event(
        "user.updated",
        1,
        "2024-02-01T00:00:00Z",
        "student",
        &["lms"],
    );
    update.as_object_mut().unwrap().remove("event_type");
    update["user"]["email"] = "renamed1@example.com".into();
    p.publish_with(
        "user.updated",
        update.to_string().as_bytes(),
        with_header("x-routing-key", user_sync::broker::text("user.deleted")),
    )
    .await;
    let store = env.store();
    wait_for(
        "applied as the update it was published as",
        WAIT,
        || async {
            row(&store, 1)
                .await
                .is_some_and(|r| r.0 && r.2.as_deref() == Some("renamed1@example.com"))
        },
    )
    .await;
    worker.stop().await;
}

/// Attempt counts a producer sets (huge, negative, not a number) are ignored: the event is
/// tried exactly MAX_ATTEMPTS times and dead-lettered with that count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_attempt_counts_are_retried_exactly_max_attempts_times() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    let hostile = [
        AMQPValue::LongLongInt(i64::MAX),
        AMQPValue::LongLongInt(-5),
        user_sync::broker::text("abc"),
    ];
    for (user, attempts) in (2..).zip(hostile) {
        // An email conflict that never resolves: retried, then dead-lettered.
        let mut clash = event(
            "user.created",
            user,
            "2024-01-02T00:00:00Z",
            "student",
            &["lms"],
        );
        clash["user"]["email"] = "user1@example.com".into();
        p.publish_with(
            "user.created",
            clash.to_string().as_bytes(),
            with_header("x-attempts", attempts),
        )
        .await;
    }
    env.wait_dead_letters(3, "dead letters", WAIT).await;
    let max_attempts = env.settings().max_attempts as i64;
    for letter in env.dead_letters().await {
        assert_dead_letter(&letter, "email_conflict", max_attempts);
    }
    worker.stop().await;
}
