//! A newer event's write to rows that exist is a plain UPDATE: no row lock first, which
//! `INSERT ... ON CONFLICT DO UPDATE` takes (a WAL record per row that replicas replay).
//! The watermark guard keeps its `ON CONFLICT` lock: it orders every writer by user id.

use super::apply;
use crate::support::*;
use sqlx::PgPool;

/// The `Heap` WAL records whose type is `LIKE kind` (`LOCK`, `UPDATE`, `HOT_UPDATE`, with
/// `+INIT` when the record starts a new page) between
/// two positions that touch the users' table. Other tests' WAL is in the range too: each
/// record names the file of the table it changes.
async fn records(admin: &PgPool, range: (&str, &str), kind: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM public.pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn) r, \
           (VALUES (pg_relation_filenode('user_sync.users'))) AS t(node) \
         WHERE r.resource_manager = 'Heap' AND r.record_type LIKE $3 \
           AND r.block_ref LIKE '% rel %/%/' || t.node || ' %'",
    )
    .bind(range.0)
    .bind(range.1)
    .bind(kind)
    .fetch_one(admin)
    .await
    .unwrap()
}

async fn lsn(admin: &PgPool) -> String {
    sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(admin)
        .await
        .unwrap()
}

/// Users that have a row and a watermark get a newer event, beside users seen for the
/// first time: their rows are updated without a `Heap/LOCK` record first (`INSERT ... ON
/// CONFLICT DO UPDATE` wrote one per updated row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_events_update_existing_rows_without_locking_them_first() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let admin = backend(&env).await;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_walinspect SCHEMA public")
        .execute(&admin)
        .await
        .unwrap();
    let created: Vec<_> = (1..=20).map(created).collect();
    apply(&store, &created).await;
    let start = lsn(&admin).await;
    let later: Vec<_> = (1..=30)
        .map(|u| {
            event(
                "user.updated",
                u,
                "2024-02-01T00:00:00Z",
                "student",
                &["lms"],
            )
        })
        .collect();
    apply(&store, &later).await;
    let end = lsn(&admin).await;
    let range = (start.as_str(), end.as_str());
    let hot = records(&admin, range, "HOT_UPDATE%").await;
    let moved = records(&admin, range, "UPDATE%").await;
    let locks = records(&admin, range, "LOCK%").await;
    assert!(hot + moved >= 20, "20 rows updated: {hot} + {moved}");
    // An UPDATE whose new version goes to another page marks the old one locked while it
    // finds room (a `LOCK` record of its own); ON CONFLICT locked every row first.
    assert!(
        locks <= moved,
        "{locks} row locks for {moved} updates off the page"
    );
}
