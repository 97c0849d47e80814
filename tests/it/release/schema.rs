//! A rollback starts: this release on a schema that a later release migrated further
//! (expand-only), and a migration edited after it was applied still refused.

use crate::support::*;
use std::time::Duration;

/// What a later release leaves behind: one more migration recorded (the one after this
/// release's last, whose version it returns), a nullable column.
async fn migrate_as_a_later_release(env: &Env) -> i64 {
    let store = env.store();
    for sql in [
        "ALTER TABLE users ADD COLUMN nickname text",
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         SELECT max(version) + 1, 'users nickname', true, '\\xdeadbeef'::bytea, 1 \
         FROM _sqlx_migrations",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    count(&store, "SELECT max(version) FROM _sqlx_migrations").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_a_later_release_migrated_is_used_and_its_migrations_are_named() {
    let env = Env::new().await;
    env.command(&["migrate"]).ok();
    let later = migrate_as_a_later_release(&env).await;

    // The init container of a rollback.
    let out = env.command(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.text());
    let warning = out
        .stdout
        .lines()
        .find(|l| l.contains("\"level\":\"WARN\"") && l.contains(&format!("\"version\":{later}")))
        .unwrap_or_else(|| panic!("no warning naming migration {later}: {}", out.text()));
    assert!(warning.contains("users nickname"), "{warning}");

    // The worker itself: starts, applies events, stops cleanly.
    let mut child = env.spawn_consuming(&mut env.binary()).await;
    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    p.send("user.deleted", 2, "2024-01-01T00:00:00Z", "student", &[])
        .await;
    let store = env.store();
    wait_for("applied", Duration::from_secs(20), || async {
        row(&store, 1).await.is_some_and(|(active, ..)| active)
    })
    .await;
    assert_eq!(child.try_wait().unwrap(), None, "the worker runs on");
    sigterm(&child);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "exit 0, got {:?}", out.status);
    assert_eq!(queue_counts(&env.dlq()).await.map(|c| c.0), Some(0));
    let nickname: Option<String> =
        sqlx::query_scalar("SELECT nickname FROM users WHERE auth_user_id = $1")
            .bind(uid(1))
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(nickname, None, "the later release's column is left alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_changed_after_it_was_applied_is_still_refused() {
    let env = Env::new().await;
    env.command(&["migrate"]).ok();
    migrate_as_a_later_release(&env).await;
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea WHERE version = 7")
        .execute(env.store().pool())
        .await
        .unwrap();

    let out = env.command(&["migrate"]);
    assert_eq!(out.code, 1, "{}", out.text());
    assert!(
        out.text()
            .contains("migration 7 was previously applied but has been modified"),
        "{}",
        out.text()
    );
    let started = env.command_within(&["run"], Duration::from_secs(30)).await;
    assert_eq!(
        started.code,
        1,
        "the worker refuses it too: {}",
        started.text()
    );
}
