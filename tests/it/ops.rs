//! The operator's interfaces against the real services: HTTP endpoints, `status`, `dlq`,
//! `send`, each through the real binary where it is a command.

use crate::helpers::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn metric(worker: &Worker, line_start: &str) -> Option<f64> {
    let (_, body) = http_get(worker.http, "/metrics").await;
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_report_liveness_readiness_and_metrics() {
    let env = Env::new().await;
    let worker = env.start().await;
    assert_eq!(http_get(worker.http, "/healthz").await.0, 200);
    wait_for("ready", WAIT, || async {
        http_get(worker.http, "/readyz").await.0 == 200
    })
    .await;

    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    p.create_student(2, &["sat"]).await;
    p.publish("user.updated", b"{not json").await;
    wait_for("three outcomes counted", WAIT, || async {
        metric(&worker, "user_sync_events_total{outcome=\"dead-lettered\"}").await == Some(1.0)
    })
    .await;
    let m = |l: &'static str| metric(&worker, l);
    assert_eq!(
        m("user_sync_events_total{outcome=\"applied\"}").await,
        Some(1.0)
    );
    let skipped = "user_sync_events_total{outcome=\"not-for-this-service\"}";
    assert_eq!(m(skipped).await, Some(1.0));
    let created = "user_sync_events_received_total{event_type=\"user.created\"}";
    assert_eq!(m(created).await, Some(2.0));
    let permanent = "user_sync_dead_letters_total{kind=\"permanent\"}";
    assert_eq!(m(permanent).await, Some(1.0));
    assert_eq!(
        m("user_sync_delivery_to_commit_seconds_count").await,
        Some(2.0)
    );
    assert_eq!(m("user_sync_broker_connected ").await, Some(1.0));
    assert_eq!(m("user_sync_database_up ").await, Some(1.0));
    assert_eq!(m("user_sync_paused ").await, Some(0.0));
    let last = m("user_sync_last_commit_timestamp_seconds ").await;
    assert!(last.is_some_and(|t| t > 1.7e9), "{last:?}");
    let (_, text) = http_get(worker.http, "/metrics").await;
    assert!(
        text.contains("# TYPE user_sync_batch_size histogram"),
        "{text}"
    );
    assert!(!text.contains(HASH));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_while_the_database_refuses_and_200_after() {
    let env = Env::new().await;
    let worker = env.start().await;
    wait_for("ready", WAIT, || async {
        http_get(worker.http, "/readyz").await.0 == 200
    })
    .await;
    set_connections(&env.db.name, false).await;
    wait_for("not ready", WAIT, || async {
        let (code, body) = http_get(worker.http, "/readyz").await;
        code == 503 && body.contains("database")
    })
    .await;
    assert_eq!(
        http_get(worker.http, "/healthz").await.0,
        200,
        "still alive"
    );
    set_connections(&env.db.name, true).await;
    wait_for("ready again", WAIT, || async {
        http_get(worker.http, "/readyz").await.0 == 200
    })
    .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_what_was_published_and_what_the_table_holds() {
    let env = Env::new().await;
    // The topology exists, nobody consumes: published events wait in the main queue.
    let worker = env.start().await;
    worker.stop().await;
    let p = env.publisher().await;
    for user in 1..=3 {
        p.create_student(user, &["lms"]).await;
    }
    let status = env.command(&["status", "--json"]);
    assert_eq!(status.code, 0, "{}", status.stdout);
    let v = status.json();
    let main = &v["queues"][0];
    assert_eq!(main["queue"], env.broker.queue.as_str());
    assert_eq!(
        (main["messages"].as_u64(), main["consumers"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(v["queues"][3]["role"], "dead letters");
    assert_eq!(v["queues"][3]["messages"], 0);
    assert_eq!(v["database"]["active"], 0);

    let worker = env.start().await;
    p.send(
        "user.deleted",
        3,
        "2024-02-01T00:00:00Z",
        "student",
        &["lms"],
    )
    .await;
    let store = env.store();
    wait_for("applied", WAIT, || async {
        row(&store, 3).await.is_some_and(|r| !r.0)
    })
    .await;
    let Run {
        code, stdout: out, ..
    } = env.command(&["status"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["queue", "role", "ready", "consumers"]
    );
    assert!(
        lines[1].starts_with(&env.broker.queue) && lines[1].ends_with(" 1"),
        "{out}"
    );
    let has_row = |cells: &[&str]| {
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == cells)
    };
    assert!(has_row(&["active", "2"]), "{out}");
    assert!(has_row(&["inactive", "(deleted)", "1"]), "{out}");
    assert!(
        has_row(&["newest", "event", "2024-02-01T00:00:00Z"]),
        "{out}"
    );
    worker.stop().await;

    let unreachable = run(env
        .binary()
        .args(["status"])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x"));
    assert_eq!(unreachable.code, 1);
    assert!(unreachable.stdout.contains("database unreachable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_masked_replayed_once_fixed_and_purged() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    // User 2 takes user 1's email while user 1 is active: retried, then dead-lettered.
    p.email_clash().await;
    let dlq = env.dlq();
    env.wait_dead_letters(1, "dead-lettered", WAIT).await;

    let Run {
        code, stdout: out, ..
    } = env.command(&["dlq", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("email_conflict") && out.contains(&uid(2).to_string()),
        "{out}"
    );
    assert!(out.starts_with("#  routing key"), "{out}");
    let out = env.command(&["dlq", "show", "1"]).stdout;
    assert!(
        out.contains("\"password_hash\": \"***\"") && !out.contains(HASH),
        "{out}"
    );
    assert!(out.contains("x-error-kind: email_conflict"), "{out}");
    let letters = env.command(&["dlq", "list", "--json"]).json();
    assert_eq!(letters[0]["attempts"], 3);
    assert_eq!(
        queue_counts(&dlq).await.unwrap().0,
        1,
        "browsing consumed nothing"
    );

    // Fix the cause (user 1 leaves), then replay: user 2 is applied.
    p.send(
        "user.deleted",
        1,
        "2024-01-03T00:00:00Z",
        "student",
        &["lms"],
    )
    .await;
    let store = env.store();
    wait_for("user 1 inactive", WAIT, || async {
        row(&store, 1).await.is_some_and(|r| !r.0)
    })
    .await;
    let out = env
        .command(&["dlq", "replay", "--kind", "permanent"])
        .stdout;
    assert!(
        out.contains("replayed 0") && out.contains("1 of other kinds"),
        "{out}"
    );
    let Run {
        code, stdout: out, ..
    } = env.command(&["dlq", "replay"]);
    assert_eq!(code, 0);
    assert!(out.contains("replayed 1"), "{out}");
    wait_for("user 2 applied", WAIT, || async {
        row(&store, 2).await.is_some_and(|r| r.0)
    })
    .await;
    assert_eq!(queue_counts(&dlq).await.unwrap().0, 0);

    p.publish("user.created", b"[]").await;
    env.wait_dead_letters(1, "dead-lettered", WAIT).await;
    let purge = env.command(&["dlq", "purge"]);
    assert_ne!(purge.code, 0);
    assert!(purge.stderr.contains("--yes"));
    let purge = env.command(&["dlq", "purge", "--yes"]);
    assert_eq!(
        (purge.code, purge.stdout.trim()),
        (0, "purged 1 dead letter(s)")
    );
    worker.stop().await;
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_outlives_the_producers_expiration() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    let ttl = Duration::from_millis(300);
    let props = lapin::BasicProperties::default().with_expiration("300".into());
    p.publish_with("user.created", b"[]", props).await;
    env.wait_dead_letters(1, "dead-lettered", WAIT).await;
    // What is tested is time passing: the producer's TTL must be long gone.
    tokio::time::sleep(ttl * 4).await;
    let letters = env.dead_letters().await;
    assert_eq!(letters.len(), 1, "the dead letter expired");
    assert_eq!(letters[0].properties.expiration(), &None);
    worker.stop().await;
}

/// Fifty letters that fail again the moment they are replayed.
async fn fifty_bad_letters(env: &Env, p: &Publisher) -> String {
    for _ in 0..50 {
        p.publish("user.created", b"[]").await;
    }
    env.wait_dead_letters(50, "dead-lettered", WAIT).await;
    env.dlq()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_ends_when_the_cause_is_not_fixed_and_reports_what_came_back() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    let dlq = fifty_bad_letters(&env, &p).await;

    // Text first: a replay that never ends fails here.
    let out = env
        .command_within(&["dlq", "replay"], Duration::from_secs(45))
        .await;
    assert_eq!(out.code, 3, "{}", out.text());
    let text = out.stdout;
    assert!(
        text.contains("replayed 50") && text.contains("50 came straight back"),
        "{text}"
    );
    wait_depth(&dlq, 50, "all back in the DLQ", WAIT).await;

    let out = env
        .command_within(&["dlq", "replay", "--json"], Duration::from_secs(45))
        .await;
    assert_eq!(out.code, 3, "some came straight back: {}", out.text());
    let report = out.json();
    assert_eq!(report["replayed"], 50, "{report}");
    assert_eq!(report["came_back"], 50, "{report}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsing_the_dlq_spends_no_delivery_attempt() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    p.publish("user.created", b"[]").await;
    p.publish("user.updated", b"{not json").await;
    p.email_clash().await;
    let dlq = env.dlq();
    env.wait_dead_letters(3, "dead-lettered", WAIT).await;
    worker.stop().await;
    let _policy = Policy::set(&dlq, r#"{"delivery-limit":2}"#).await;

    let first = env.command(&["dlq", "list", "--json"]).stdout;
    for _ in 0..4 {
        let again = env.command(&["dlq", "list", "--json"]);
        assert_eq!(
            (again.code, &again.stdout),
            (0, &first),
            "same letters, same order"
        );
        let shown = env.command(&["dlq", "show", "3", "--json"]);
        assert_eq!(shown.code, 0);
        assert!(shown.stdout.contains("email_conflict"), "{}", shown.stdout);
    }
    let explained = env.command(&["explain", &uid(2).to_string()]);
    assert_eq!(explained.code, 0);
    assert_eq!(
        queue_counts(&dlq).await.unwrap().0,
        3,
        "every letter remains"
    );
    let letters: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(letters.as_array().unwrap().len(), 3);
    let last = env.command(&["dlq", "list", "--json"]).stdout;
    assert_eq!(last, first);
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
