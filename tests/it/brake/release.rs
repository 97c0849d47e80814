//! Only `brake release` lets a held deactivation through: a producer cannot forge or
//! replay its token.

use super::*;
use crate::support::*;

/// A deletion published with an `x-brake-release` header of the producer's own making is
/// parked like the rest: only `brake release` can let a held deactivation through.
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

/// A deletion published by a producer with the `x-brake-release` token of an earlier
/// release is parked like any other: the token counts only on the service's own copies,
/// and a token once seen (`dlq show` shows it on a dead-lettered copy) must not open every
/// later engagement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_token_on_a_producers_deletion_does_not_pass_the_brake() {
    let env = Env::new().await.set("deactivation_brake", "1");
    let settings = env.settings();
    // A release long ago (nothing held then): its token is in brake_log.
    env.declare().await;
    user_sync::ops::brake::release(&settings).await.unwrap();
    let store = env.store();
    let token: String = sqlx::query_scalar("SELECT token FROM brake_log WHERE token IS NOT NULL")
        .fetch_one(store.pool())
        .await
        .unwrap();

    let worker = env.start().await;
    let p = env.publisher().await;
    create_all(&env, &p, &[1]).await;
    engage_brake(&env, &p).await;

    let release = with_header(
        "x-brake-release",
        lapin::types::AMQPValue::LongString(token.into()),
    );
    let body = event(
        "user.deleted",
        1,
        "2024-01-09T00:00:00Z",
        "student",
        &["lms"],
    );
    p.publish_with("user.deleted", body.to_string().as_bytes(), release)
        .await;
    wait_for("the deletion handled", WAIT, || async {
        hold_depth(&env).await == 2 || row(&store, 1).await.is_some_and(|r| !r.0)
    })
    .await;
    worker.stop().await;
    assert!(
        row(&store, 1).await.unwrap().0,
        "a producer's deletion with a replayed token passed the engaged brake"
    );
}
