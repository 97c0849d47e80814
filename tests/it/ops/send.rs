//! `send`: a smoke test that the worker applies, reaching only this service's queue
//! unless told otherwise.

use super::*;
use crate::support::*;

/// `send` publishes an event, from flags or from a file, that the worker applies; an unknown
/// type is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_publishes_an_event_the_worker_applies() {
    let env = Env::new().await;
    let worker = env.start().await;
    let id = uid(7).to_string();
    let Run {
        code,
        stdout: out,
        stderr: err,
        ..
    } = env.command(&[
        "send",
        "--type",
        "created",
        "--email",
        "smoke@example.com",
        "--role",
        "teacher",
        "--user-id",
        &id,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sent user.created"), "{out}");
    let store = env.store();
    wait_for("applied", WAIT, || async {
        row(&store, 7)
            .await
            .is_some_and(|r| r.2.as_deref() == Some("smoke@example.com"))
    })
    .await;
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/events/valid/created_student_lms_sat.json"
    );
    let Run {
        code,
        stdout: out,
        stderr: err,
        ..
    } = env.command(&["send", "--file", fixture]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sent user.created"), "{out}");
    let body: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let fixture_user: uuid::Uuid = body["user_id"].as_str().unwrap().parse().unwrap();
    wait_for("the file's event applied", WAIT, || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users WHERE auth_user_id = $1")
            .bind(fixture_user)
            .fetch_one(store.pool())
            .await
            .unwrap()
            == 1
    })
    .await;
    let renamed = env.command(&["send", "--type", "renamed"]);
    assert_ne!(renamed.code, 0);
    assert!(renamed.stderr.contains("--type"), "{}", renamed.stderr);
    worker.stop().await;
}

/// A smoke test stays local: `send` reaches this service's queue only, and another
/// service's queue bound to the same exchange receives nothing unless `--to-exchange`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reaches_only_this_services_queue_unless_told_otherwise() {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
    let env = Env::new().await;
    let worker = env.start().await;
    let other = format!("{}.other_service", env.broker.queue);
    let conn = lapin::Connection::connect(&amqp(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        other.as_str().into(),
        QueueDeclareOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
    for key in user_sync::broker::ROUTING_KEYS {
        ch.queue_bind(
            other.as_str().into(),
            env.broker.exchange.as_str().into(),
            key.into(),
            QueueBindOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    }
    let id = uid(8).to_string();
    let local = env.command(&[
        "send",
        "--email",
        "smoke8@example.com",
        "--services",
        "lms",
        "--user-id",
        &id,
    ]);
    assert_eq!(local.code, 0, "{}", local.stderr);
    assert!(local.stdout.contains("only"), "{}", local.stdout);
    let store = env.store();
    wait_for("applied here", WAIT, || async {
        row(&store, 8).await.is_some()
    })
    .await;
    assert_eq!(
        queue_counts(&other).await.map(|c| c.0),
        Some(0),
        "the other service saw it"
    );
    let shared = env.command(&["send", "--email", "smoke9@example.com", "--to-exchange"]);
    assert_eq!(shared.code, 0, "{}", shared.stderr);
    assert!(shared.stderr.contains("every service"), "{}", shared.stderr);
    wait_for("the other service's copy", WAIT, || async {
        queue_counts(&other).await.is_some_and(|c| c.0 == 1)
    })
    .await;
    let _ = ch
        .queue_delete(other.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "bye".into()).await;
    worker.stop().await;
}
