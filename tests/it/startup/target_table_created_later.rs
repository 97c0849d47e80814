//! A sidecar starts before the backend's own migrations have created its `[target]` table
//! (native sidecars start first): the worker waits for the table, alive and not ready,
//! instead of exiting 2 into a crash loop that holds the backend's Pod in Init.

use crate::support::*;
use std::time::Duration;

const PEOPLE: &str = "[target]\ntable = \"public.people\"\nkey = \"auth_user_id\"\n\
    [target.columns]\nemail = \"email\"\n[target.deactivation]\nflag = \"active\"\n";

/// The Django table created 5 s after the worker started: the worker is still running,
/// `/healthz` 200, `/readyz` 503, and once the table exists it consumes and converges it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_table_created_after_the_start_is_waited_for() {
    let env = Env::new().await;
    let mapping = mapping_of(DJANGO.mapping);
    let worker = Worker::spawn(DJANGO.settings(&env, mapping));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !worker.task.is_finished(),
        "the worker exited before the backend created its table"
    );
    let (status, _) = http_get(worker.http, "/healthz").await;
    assert_eq!(status, 200, "alive while it waits for the table");
    let (status, body) = http_get(worker.http, "/readyz").await;
    assert_eq!(status, 503, "{body}");

    DJANGO.create(&env).await;
    env.wait_consumers(
        1,
        "consuming once the table exists",
        Duration::from_secs(60),
    )
    .await;
    env.publisher().await.create_student(1, &["lms"]).await;
    let db = backend(&env).await;
    wait_for("the adopted row", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM public.auth_user WHERE auth_user_id = $1)",
        )
        .bind(uid(1))
        .fetch_one(&db)
        .await
        .unwrap()
    })
    .await;
    worker.stop().await;
}

/// A table that exists but that the database user may not touch at all is no table still to
/// come: `information_schema` hides its columns, and only `pg_class` tells the two apart.
/// It is refused as a problem (exit 2 for `run`), never waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_hidden_by_privileges_is_refused_not_waited_for() {
    let mut env = Env::new().await;
    let role = format!("usync_none_{}", uuid::Uuid::new_v4().simple());
    let db = backend(&env).await;
    run_sql(
        &db,
        &format!(
            "CREATE TABLE public.people (id serial PRIMARY KEY, email text NOT NULL, \
               active boolean NOT NULL, auth_user_id uuid UNIQUE); \
             CREATE ROLE {role} LOGIN"
        ),
    )
    .await;
    env.overrides
        .insert("database_url".into(), pg_url_as(&role, &env.db.name));
    let mut settings = env.settings();
    settings.target_table = Some(mapping_of(PEOPLE));
    let store = user_sync::store::Store::new(&settings).unwrap();
    let prepared = store.prepare_target_table().await;
    store.pool().close().await;
    run_sql(&db, &format!("DROP OWNED BY {role}; DROP ROLE {role}")).await;
    let problems = prepared.expect_err("a table this user cannot see");
    assert!(
        problems
            .iter()
            .any(|p| p.to_string().contains("can see none of its columns")),
        "{problems:?}"
    );
}
