//! The convergence rule on a backend's own table: stale events change nothing, replicas
//! end in the model, and an event the backend's own unique index refuses takes no other
//! with it.

use super::*;
use crate::support::*;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool, Row};
use std::collections::BTreeMap;
use std::time::Duration;
use user_sync::decide::{self, Planned, UserRow};

/// Publishes a marker for user 200 and waits until the target has it: whatever was
/// published before it has been processed.
async fn target_barrier(fw: &Framework, db: &PgPool, p: &Publisher, marker: &str, ts: &str) {
    let e = event_for(
        "user.updated",
        200,
        ts,
        "teacher",
        &[],
        (marker, true, HASH),
    );
    p.publish_json(&e).await;
    fw.wait_first_name(db, 200, marker).await;
}

/// On Django's table, events older than the newest applied (a create, an update, a deletion)
/// and a duplicate change nothing in the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_a_stale_event_changes_nothing() {
    let env = Env::new().await;
    let mapping = DJANGO.create(&env).await;
    let db = &backend(&env).await;
    let worker = DJANGO.start(&env, mapping).await;
    let p = env.publisher().await;
    let ts = "2024-02-01T00:00:00Z";
    let current = event_for(
        "user.updated",
        2,
        ts,
        "student",
        &["lms"],
        ("Now", true, HASH),
    );
    p.publish_json(&current).await;
    DJANGO.wait_first_name(db, 2, "Now").await;
    let before = DJANGO.row(db, 2).await.unwrap();
    // Older: a create as admin with another name, an update, a deletion.
    let old = "2024-01-01T00:00:00Z";
    for (kind, first) in [
        ("user.created", "Stale"),
        ("user.updated", "Staler"),
        ("user.deleted", "Stale"),
    ] {
        let e = event_for(kind, 2, old, "admin", &["lms"], (first, true, HASH));
        p.publish_json(&e).await;
    }
    // The same event again: a duplicate.
    p.publish_json(&current).await;
    target_barrier(&DJANGO, db, &p, "barrier", "2024-03-01T00:00:00Z").await;
    assert_eq!(DJANGO.row(db, 2).await.unwrap(), before);
    worker.stop().await;
}

/// The histories the two-replica tests draw from.
pub(super) const HISTORY: Shape = Shape {
    users: 5,
    seconds: 4,
    roles: &["student", "teacher", "admin"],
    names: &["Name0", "Name1", "Name2"],
};

/// Django events: users 1 to 5, staff and students; a name left out (`Name2`) is sent as
/// null, which Django's NOT NULL names store as ''.
fn arb_django_event() -> impl Strategy<Value = serde_json::Value> {
    arb_event(HISTORY).prop_map(|mut e| {
        if e["user"]["first_name"] == "Name2" {
            e["user"]["last_name"] = serde_json::Value::Null;
        }
        e
    })
}

/// Two replicas on a framework's table whose rows have reached the model.
pub(super) struct Converged<R> {
    _env: Env,
    pub(super) db: PgPool,
    /// Each user's row as the model has it.
    pub(super) expected: BTreeMap<uuid::Uuid, R>,
    replicas: [Worker; 2],
}

impl<R> Converged<R> {
    pub(super) async fn stop(self) {
        for replica in self.replicas {
            replica.stop().await;
        }
    }
}

/// Starts two replicas on `fw`'s table, feeds them a shuffled history of `events` with
/// duplicates and waits until the rows `sql` reads (a row's columns, then `auth_user_id`)
/// are the model's, each user's converged row as `to_row` maps it.
pub(super) async fn two_replicas_converge<R>(
    fw: &Framework,
    events: impl Strategy<Value = serde_json::Value>,
    sql: &str,
    to_row: impl Fn(UserRow) -> R,
) -> Converged<R>
where
    R: for<'r> FromRow<'r, PgRow> + PartialEq + std::fmt::Debug,
{
    let env = Env::new().await.set("batch_size", "7");
    let mapping = fw.create(&env).await;
    let db = backend(&env).await;
    let a = fw.start(&env, mapping.clone()).await;
    let b = fw.start(&env, mapping).await;
    let p = env.publisher().await;
    let mut runner = TestRunner::deterministic();
    let history = prop::collection::vec(events, 300)
        .new_tree(&mut runner)
        .unwrap();
    let history = proptest::strategy::ValueTree::current(&history);
    for e in replayed_out_of_order(&history) {
        p.publish_json(e).await;
    }
    let planned: Vec<Planned> = history
        .iter()
        .map(|e| plan_as(e, &default_membership()))
        .collect();
    let expected: BTreeMap<uuid::Uuid, R> = decide::converge(&planned)
        .into_iter()
        .filter_map(|(id, state)| Some((id, to_row(state.row?))))
        .collect();
    assert!(
        expected.len() >= 3,
        "a history that creates rows: {expected:?}"
    );
    wait_depth(
        &env.broker.queue,
        0,
        "queue drained",
        Duration::from_secs(30),
    )
    .await;
    wait_for("target converged", Duration::from_secs(30), || async {
        rows_by_user::<R>(&db, sql).await == expected
    })
    .await;
    Converged {
        _env: env,
        db,
        expected,
        replicas: [a, b],
    }
}

/// The rows `sql` reads, by `auth_user_id`: a row's columns first, the id last.
async fn rows_by_user<R>(db: &PgPool, sql: &str) -> BTreeMap<uuid::Uuid, R>
where
    R: for<'r> FromRow<'r, PgRow>,
{
    sqlx::query(sql)
        .fetch_all(db)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("auth_user_id"), R::from_row(r).unwrap()))
        .collect()
}

/// (email, first name, last name, active, is_staff, is_superuser) of a Django row.
type DjangoRow = (String, String, String, bool, bool, bool);

/// Two replicas on Django's table, fed a shuffled history with duplicates, end in the model;
/// the legacy row is adopted, not duplicated, and the backend's own user is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_two_replicas_converge_to_the_model() {
    let sql = "SELECT email::text, first_name::text, last_name::text, is_active, is_staff, \
               is_superuser, auth_user_id FROM public.auth_user WHERE auth_user_id IS NOT NULL";
    let run = two_replicas_converge(&DJANGO, arb_django_event(), sql, |row| -> DjangoRow {
        let role = row.role.as_deref().unwrap_or_default().to_lowercase();
        (
            row.email,
            row.first_name.unwrap_or_default(),
            row.last_name.unwrap_or_default(),
            row.is_active,
            role == "admin" || role == "teacher",
            role == "admin",
        )
    })
    .await;
    let db = &run.db;
    // User 1 adopts the legacy row (its email, another case) once it has a row at all;
    // the backend's own user is never touched.
    let legacy_left = if run.expected.contains_key(&uid(1)) {
        1
    } else {
        2
    };
    assert_eq!(DJANGO.count(db, "auth_user_id IS NULL").await, legacy_left);
    assert_eq!(
        DJANGO.count(db, "lower(email) = 'user1@example.com'").await,
        1,
        "adopted, not duplicated"
    );
    run.stop().await;
}

/// Laravel's (and Devise's, and Django's `username`) unique index covers soft-deleted rows
/// too, where the service's own table only keeps active emails unique: a new user with the
/// email of a deleted one is refused by the backend's index. That one event is
/// dead-lettered, naming the constraint; the users behind it are synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laravel_an_email_held_by_a_soft_deleted_row_dead_letters_one_event() {
    let env = Env::new().await;
    let mapping = LARAVEL.create(&env).await;
    let db = &backend(&env).await;
    let worker = LARAVEL.start(&env, mapping).await;
    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    p.send("user.deleted", 1, "2024-01-02T00:00:00Z", "student", &[])
        .await;
    wait_for("user 1 soft-deleted", WAIT, || async {
        LARAVEL.row(db, 1).await.is_some_and(|r| !r.active)
    })
    .await;
    let mut reuse = event(
        "user.created",
        2,
        "2024-01-03T00:00:00Z",
        "student",
        &["lms"],
    );
    reuse["user"]["email"] = "user1@example.com".into();
    p.publish_json(&reuse).await;
    p.create_student(3, &["lms"]).await;
    env.wait_dead_letters(1, "the reused email dead-lettered", WAIT)
        .await;
    wait_for("user 3 synced", WAIT, || async {
        LARAVEL.row(db, 3).await.is_some()
    })
    .await;
    worker.stop().await;
    let dead = env.dead_letters().await;
    let error = header(&dead[0], "x-error").unwrap();
    assert!(
        error.contains("23505") && error.contains("users_email_unique"),
        "{error}"
    );
    assert!(LARAVEL.row(db, 2).await.is_none());
}
