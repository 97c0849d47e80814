//! The rules one event at a time through the real worker: who belongs to this service,
//! what each event does to a row, stale and duplicate events, adoption of the backend's
//! own rows, email conflicts.

use crate::support::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn watermark_count(env: &Env) -> i64 {
    count(&env.store(), "SELECT count(*) FROM user_watermarks").await
}

/// Only users of this service get rows (staff roles belong everywhere; roles and services
/// compare case-insensitively), while every user seen gets a watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_users_of_this_service_get_rows() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    p.create_student(1, &["lms", "sat"]).await;
    p.create_student(2, &["sat"]).await;
    p.send("user.created", 3, "2024-01-01T00:00:00Z", "Teacher", &[])
        .await;
    p.send(
        "user.created",
        4,
        "2024-01-01T00:00:00Z",
        "STUDENT",
        &["LMS"],
    )
    .await;
    barrier(&env, &p, "2024-01-01T00:00:01Z").await;
    let store = env.store();
    assert!(row(&store, 1).await.unwrap().0);
    assert!(
        row(&store, 2).await.is_none(),
        "no row for another service's student"
    );
    assert!(row(&store, 3).await.unwrap().0, "staff belong everywhere");
    assert!(row(&store, 4).await.unwrap().0, "case-insensitive");
    assert_eq!(
        watermark_count(&env).await,
        5,
        "every user seen has a watermark"
    );
    worker.stop().await;
}

/// Created, revoked, re-granted and deleted: the one row is deactivated with the reason of
/// each step and reactivated by the grant, never deleted or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_regranting_and_deleting_deactivate_and_reactivate_one_row() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    let store = env.store();
    type Step<'a> = (&'a str, &'a str, &'a [&'a str], bool, Option<&'a str>);
    let steps: [Step; 4] = [
        ("user.created", "2024-01-01T00:00:00Z", &["lms"], true, None),
        (
            "user.updated",
            "2024-01-02T00:00:00Z",
            &["sat"],
            false,
            Some("access_revoked"),
        ),
        (
            "user.updated",
            "2024-01-03T00:00:00Z",
            &["sat", "lms"],
            true,
            None,
        ),
        (
            "user.deleted",
            "2024-01-04T00:00:00Z",
            &[],
            false,
            Some("deleted"),
        ),
    ];
    for (kind, ts, services, active, reason) in steps {
        p.send(kind, 1, ts, "student", services).await;
        wait_for(kind, WAIT, || async {
            row(&store, 1)
                .await
                .is_some_and(|r| r.0 == active && r.1.as_deref() == reason)
        })
        .await;
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(count, 1, "never deleted, never duplicated");
    worker.stop().await;
}

/// Duplicates, events older than the newest applied and late events for users never given a
/// row change nothing: the table is what timestamp order gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_stale_and_late_events_change_nothing() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    let store = env.store();
    // Duplicates.
    for _ in 0..3 {
        p.create_student(1, &["lms"]).await;
    }
    // Stale after newer: the newer revocation wins.
    p.send(
        "user.updated",
        2,
        "2024-01-05T00:00:00Z",
        "student",
        &["sat"],
    )
    .await;
    p.create_student(2, &["lms"]).await;
    // Deleted, then an older update: stays deleted.
    p.create_student(3, &["lms"]).await;
    p.send("user.deleted", 3, "2024-01-05T00:00:00Z", "student", &[])
        .await;
    p.update(3, "2024-01-03T00:00:00Z").await;
    // A never-seen user deleted, then its late create: no resurrection.
    let deleted = serde_json::json!({
        "event_type": "user.deleted", "user_id": uid(4).to_string(), "timestamp": "2024-01-05T00:00:00Z"
    });
    p.publish_json(&deleted).await;
    p.create_student(4, &["lms"]).await;
    barrier(&env, &p, "2024-01-06T00:00:00Z").await;

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE auth_user_id = $1")
        .bind(uid(1))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(
        row(&store, 2).await.map(|r| r.0),
        Some(false),
        "newer revocation holds"
    );
    assert_eq!(row(&store, 3).await.unwrap().1.as_deref(), Some("deleted"));
    let four = row(&store, 4).await;
    assert!(
        four.as_ref().is_none_or(|r| !r.0),
        "never active again: {four:?}"
    );
    assert!(env.dead_letters().await.is_empty());
    worker.stop().await;
}

/// A row the backend had before the sync (same email in another case, no auth id) is linked
/// to the auth user and updated, not duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_backend_had_are_adopted_by_email() {
    let env = Env::new().await;
    env.store().migrate().await.unwrap();
    sqlx::query(
        "INSERT INTO users (email, first_name, last_name, role, is_active) \
         VALUES ('User1@Example.com', 'Old', 'Name', 'student', true)",
    )
    .execute(env.store().pool())
    .await
    .unwrap();
    let worker = env.start().await;
    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    let store = env.store();
    wait_for("adopted", WAIT, || async { row(&store, 1).await.is_some() }).await;
    let rows: Vec<(Option<uuid::Uuid>, String, Option<String>)> =
        sqlx::query_as("SELECT auth_user_id, first_name, password_hash FROM users")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 1, "linked, not duplicated");
    assert_eq!(rows[0].0, Some(uid(1)));
    assert_eq!(rows[0].1, "Test");
    assert_eq!(rows[0].2.as_deref(), Some(HASH));
    worker.stop().await;
}

/// An email held by another active user is retried: it succeeds once the holder moves away,
/// and is dead-lettered as `email_conflict` after MAX_ATTEMPTS when the holder keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_conflicts_retry_then_succeed_or_dead_letter() {
    let env = Env::new().await.set("max_attempts", "4");
    let worker = env.start().await;
    let p = env.publisher().await;
    let store = env.store();
    // User 1 holds user9@example.com; user 2 wants it.
    let mut holder = created(1);
    holder["user"]["email"] = "user9@example.com".into();
    p.publish_json(&holder).await;
    wait_for("holder", WAIT, || async { row(&store, 1).await.is_some() }).await;
    let mut taker = event(
        "user.created",
        2,
        "2024-01-02T00:00:00Z",
        "student",
        &["lms"],
    );
    taker["user"]["email"] = "user9@example.com".into();
    p.publish_json(&taker).await;
    // While the taker waits in a retry tier, the holder moves to another address.
    p.update(1, "2024-01-03T00:00:00Z").await;
    wait_for("taker applied on retry", WAIT, || async {
        row(&store, 2)
            .await
            .is_some_and(|r| r.0 && r.2.as_deref() == Some("user9@example.com"))
    })
    .await;

    // An unresolvable conflict: dead-lettered after MAX_ATTEMPTS (4 here).
    let mut stuck = event(
        "user.created",
        3,
        "2024-01-04T00:00:00Z",
        "student",
        &["lms"],
    );
    stuck["user"]["email"] = "USER9@example.com".into();
    p.publish_json(&stuck).await;
    env.wait_dead_letters(1, "conflict dead-lettered", WAIT)
        .await;
    let dead = env.dead_letters().await;
    assert_dead_letter(&dead[0], "email_conflict", 4);
    assert_eq!(dead[0].routing_key.as_str(), "user.created");
    assert_eq!(dead[0].data, stuck.to_string().into_bytes());
    assert!(row(&store, 3).await.is_none());
    worker.stop().await;
}
