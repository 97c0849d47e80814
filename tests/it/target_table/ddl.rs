//! `migrate --print-target-sql`: the DDL a backend runs to make its table mappable.

use super::*;
use crate::support::*;
use sqlx::PgPool;
use std::process::Command;
use user_sync::store::{Store, target_table_ddl};

/// `migrate --print-target-sql` prints the key column and index for Django's table; once the
/// backend runs it, the binary with the same settings file syncs into the table, adopting the
/// legacy row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_target_sql_then_the_binary_syncs_into_django() {
    let env = Env::new().await;
    let db = &backend(&env).await;
    run_sql(db, DJANGO.ddl).await;
    run_sql(db, DJANGO.legacy).await;
    let run = with_config(&env, DJANGO.mapping, &["migrate", "--print-target-sql"]).await;
    assert!(run.success, "{}", run.text());
    let mapping = mapping_of(DJANGO.mapping);
    assert_eq!(run.stdout, target_table_ddl(&mapping));
    assert!(
        run.stdout.contains(
            "ALTER TABLE \"public\".\"auth_user\" ADD COLUMN IF NOT EXISTS \"auth_user_id\" uuid;"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS \"auth_user_auth_user_id_key\" \
             ON \"public\".\"auth_user\" (\"auth_user_id\");"
        ),
        "{}",
        run.stdout
    );
    // Without a [target] section there is nothing to print.
    let none = with_config(&env, "", &["migrate", "--print-target-sql"]).await;
    assert_eq!(none.code, 2, "{}", none.text());

    // The backend runs the printed DDL; the binary, with the same file, then syncs.
    run_sql(db, &run.stdout).await;
    let file = ConfigFile::new(DJANGO.mapping);
    let mut cmd = env.binary();
    cmd.env("CONFIG_FILE", &file.path);
    let child = env.spawn_consuming(&mut cmd).await;
    let p = env.publisher().await;
    let e = event_for(
        "user.created",
        1,
        "2024-01-01T00:00:00Z",
        "Teacher",
        &[],
        ("Ada", true, HASH),
    );
    p.publish_json(&e).await;
    DJANGO.wait_first_name(db, 1, "Ada").await;
    let (username, staff, superuser, last_login): (String, bool, bool, Option<String>) =
        sqlx::query_as(
            "SELECT username::text, is_staff, is_superuser, last_login::text \
             FROM auth_user WHERE auth_user_id = $1",
        )
        .bind(uid(1))
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(username, "user1@example.com");
    assert!(staff, "teacher is staff (role map from the settings file)");
    assert!(!superuser);
    assert_eq!(last_login.as_deref(), Some("2023-05-01 10:00:00+00"));
    assert_eq!(DJANGO.count(db, "true").await, 2, "adopted");
    sigterm(&child);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    Run::of(out).ok();
}

/// The printed DDL runs as-is with `psql -f` (each statement in autocommit, so
/// CONCURRENTLY is allowed), and again (IF NOT EXISTS), and the start-up check accepts the
/// result. Through `psql -c` (one implicit transaction) Postgres refuses it: the README
/// says `-f` or stdin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_target_sql_runs_twice_with_psql_f() {
    let env = Env::new().await;
    let db = PgPool::connect(&env.db.url()).await.unwrap();
    run_sql(
        &db,
        "CREATE TABLE public.auth_user (id serial PRIMARY KEY, email varchar(254) NOT NULL, \
           is_active boolean NOT NULL)",
    )
    .await;
    let mapping = mapping_of(
        r#"
        [target]
        table = "public.auth_user"
        key = "auth_user_id"
        [target.columns]
        email = "email"
        [target.deactivation]
        flag = "is_active"
        "#,
    );
    let path = std::env::temp_dir().join(format!("ddl-{}.sql", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, target_table_ddl(&mapping)).unwrap();
    for _ in 0..2 {
        let out = Command::new("psql")
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-d", &env.db.url(), "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_file(&path);
    let mut settings = env.settings();
    settings.target_table = Some(mapping);
    let store = Store::new(&settings).unwrap();
    store.migrate().await.unwrap();
    assert!(store.prepare_target_table().await.is_ok());
}
