//! A backend's table (`[target]`) has no event-time column: a newer event with the same
//! fields and status leaves its row as it was.

use super::apply;
use crate::support::*;
use sqlx::PgPool;
use user_sync::decide::Outcome;
use user_sync::store::{EventResult, Store, target_table_ddl};
use user_sync::target_table::TargetTable;

const DDL: &str = "CREATE TABLE public.accounts (id serial PRIMARY KEY, email text NOT NULL, \
    first_name text, last_name text, services text[], active boolean NOT NULL, \
    reason text, seen timestamptz)";

const SECTION: &str = r#"
[target]
table = "public.accounts"
key = "auth_user_id"
[target.columns]
email = "email"
first_name = "first_name"
last_name = "last_name"
services = "allowed_services"
seen = "now_on_insert"
[target.deactivation]
flag = "active"
reason = "reason"
"#;

fn mapping() -> TargetTable {
    mapping_of(SECTION)
}

async fn row_version(db: &PgPool) -> String {
    sqlx::query_scalar("SELECT xmin::text FROM public.accounts WHERE auth_user_id = $1")
        .bind(uid(1))
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_event_with_the_same_fields_keeps_the_row_version() {
    let env = Env::new().await;
    let db = backend(&env).await;
    run_sql(&db, DDL).await;
    let m = mapping();
    run_sql(&db, &target_table_ddl(&m)).await;
    let mut settings = env.settings();
    settings.target_table = Some(m);
    let store = Store::new(&settings).unwrap();
    store.migrate().await.unwrap();
    store.prepare_target_table().await.unwrap();

    let created = event(
        "user.created",
        1,
        "2024-01-01T00:00:00Z",
        "student",
        &["lms"],
    );
    apply(&store, &[created]).await;
    let before = row_version(&db).await;
    let same = event(
        "user.updated",
        1,
        "2024-02-01T00:00:00Z",
        "student",
        &["lms"],
    );
    assert_eq!(
        apply(&store, &[same]).await,
        [EventResult::Done(Outcome::Unchanged)]
    );
    assert_eq!(row_version(&db).await, before, "no new row version");

    let renamed = {
        let mut e = event(
            "user.updated",
            1,
            "2024-03-01T00:00:00Z",
            "student",
            &["lms"],
        );
        e["user"]["last_name"] = "Renamed".into();
        e
    };
    assert_eq!(
        apply(&store, &[renamed]).await,
        [EventResult::Done(Outcome::Applied)]
    );
    assert_ne!(row_version(&db).await, before, "a change is written");
}
