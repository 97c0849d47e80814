//! Stale, duplicate and unchanged events, and an unchanged reconcile, write no row.

use super::apply;
use crate::support::*;
use sqlx::PgPool;
use user_sync::decide::Outcome;
use user_sync::ops::import::ImportOptions;
use user_sync::store::EventResult;

const USERS: u8 = 40;

/// Every row version of the users and their watermarks: (table, auth id, xmin, xmax).
/// A write makes a new version (xmin); a row lock, even one that changes nothing, sets
/// xmax.
async fn versions(db: &PgPool) -> Vec<(String, uuid::Uuid, String, String)> {
    sqlx::query_as(
        "SELECT 'users', auth_user_id, xmin::text, xmax::text FROM users \
         WHERE auth_user_id IS NOT NULL \
         UNION ALL SELECT 'watermark', auth_user_id, xmin::text, xmax::text FROM user_watermarks \
         ORDER BY 1, 2",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

fn batch(kind: &str, ts: &str) -> Vec<serde_json::Value> {
    (1..=USERS)
        .map(|u| event(kind, u, ts, "student", &["lms"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_older_batches_leave_every_row_version_unlocked() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let db = store.pool().clone();
    apply(&store, &batch("user.created", "2024-02-01T00:00:00Z")).await;
    apply(&store, &batch("user.deleted", "2024-03-01T00:00:00Z")).await;
    let before = versions(&db).await;
    assert_eq!(before.len(), 2 * USERS as usize);

    let replay = [
        batch("user.created", "2024-02-01T00:00:00Z"),
        batch("user.deleted", "2024-03-01T00:00:00Z"),
    ]
    .concat();
    let older = batch("user.updated", "2024-01-01T00:00:00Z");
    for events in [replay, older] {
        let results = apply(&store, &events).await;
        assert!(
            results
                .iter()
                .all(|r| *r == EventResult::Done(Outcome::Stale)),
            "{results:?}"
        );
        assert_eq!(versions(&db).await, before, "no new version, no row lock");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_reconcile_at_the_applied_time_writes_no_row_version() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let db = store.pool().clone();
    let export: String = batch("user.created", "2024-01-01T00:00:00Z")
        .iter()
        .map(|e| {
            let mut user = e["user"].clone();
            user.as_object_mut().unwrap().remove("timestamp");
            format!("{user}\n")
        })
        .collect();
    let opts = |full| ImportOptions {
        as_of: Some(time::macros::datetime!(2024-01-01 00:00 UTC)),
        batch_size: 16,
        full,
        ..Default::default()
    };
    env.import_text(&export, &opts(false)).await.unwrap();
    let before = versions(&db).await;
    assert_eq!(before.len(), 2 * USERS as usize);
    let lines = trail_lines(&db).await;
    assert_eq!(lines, i64::from(USERS), "each created user has its line");
    env.import_text(&export, &opts(true)).await.unwrap();
    assert_eq!(versions(&db).await, before, "no new version, no row lock");
    assert_eq!(
        trail_lines(&db).await,
        lines,
        "records that changed nothing leave no trail line"
    );
}

async fn trail_lines(db: &PgPool) -> i64 {
    scalar(db, "SELECT count(*) FROM audit_trail").await
}

/// An import that deactivates a row again has a trail line for it, though the user's
/// watermark already stood on that deactivation: the backend had reactivated the row
/// meanwhile, and the import changed it back. Only records that change nothing go unsaid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_that_deactivates_a_row_the_backend_reactivated_leaves_a_trail_line() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let db = store.pool().clone();
    let opts = |at| ImportOptions {
        as_of: Some(at),
        ..Default::default()
    };
    let jan = time::macros::datetime!(2024-01-01 00:00 UTC);
    let student = format!("{}\n", record(1, "student", &["lms"]));
    env.import_text(&student, &opts(jan)).await.unwrap();
    // Not a user of this service any more: the row is deactivated.
    let gone = format!("{}\n", record(1, "student", &["crm"]));
    let feb = time::macros::datetime!(2024-02-01 00:00 UTC);
    env.import_text(&gone, &opts(feb)).await.unwrap();
    assert_eq!(row(&store, 1).await.map(|r| r.0), Some(false));
    sqlx::query("UPDATE users SET is_active = true, deactivation_reason = NULL")
        .execute(&db)
        .await
        .unwrap();
    let before = trail_lines(&db).await;
    let mar = time::macros::datetime!(2024-03-01 00:00 UTC);
    env.import_text(&gone, &opts(mar)).await.unwrap();
    assert_eq!(
        row(&store, 1).await.map(|r| r.0),
        Some(false),
        "deactivated again"
    );
    assert_eq!(
        trail_lines(&db).await,
        before + 1,
        "the row went from active to inactive without a trail line"
    );
}
