//! A mapping that does not fit the table is refused at start (exit 2, one line per
//! problem) by every command, never turned into a dead letter per event or a panic.

use super::*;
use crate::support::*;
use sqlx::PgPool;
use user_sync::store::{Store, target_table_ddl};
use user_sync::target_table::TargetTable;

/// A mapping that does not fit Django's table exits 2 with one line per problem, each naming
/// its column: a missing column, a wrongly typed flag, an unwritten NOT NULL column, a key
/// without a usable unique index, a missing or unqualified table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_that_does_not_fit_exits_2_naming_each_column() {
    let env = Env::new().await;
    let db = &backend(&env).await;
    run_sql(db, DJANGO.ddl).await;
    // The key column with an index that is not unique.
    run_sql(
        db,
        "ALTER TABLE auth_user ADD COLUMN auth_user_id uuid; \
         CREATE INDEX auth_user_auth_user_id ON auth_user (auth_user_id)",
    )
    .await;
    // middle_name does not exist, the flag is a timestamp, is_active (NOT NULL, no
    // default) is not written, and the key is not unique.
    let bad = DJANGO
        .mapping
        .replace(
            "date_joined = \"now_on_insert\"",
            "middle_name = \"last_name\"",
        )
        .replace("flag = \"is_active\"", "flag = \"date_joined\"");
    let run = with_config(&env, &bad, &[]).await;
    assert_eq!(run.code, 2, "{}", run.text());
    let lines = problems(&run);
    assert_eq!(lines.len(), 4, "one line per problem: {}", run.stderr);
    for (column, says) in [
        ("`middle_name`", "does not exist"),
        ("`date_joined`", "expected one of bool"),
        ("`is_active`", "NOT NULL without a default"),
        ("`auth_user_id`", "no unique index"),
    ] {
        assert!(
            lines.iter().any(|l| l.contains(column) && l.contains(says)),
            "{column} {says}: {}",
            run.stderr
        );
    }

    // A unique index with a predicate cannot serve ON CONFLICT (key): refused too.
    run_sql(
        db,
        "DROP INDEX auth_user_auth_user_id; \
         CREATE UNIQUE INDEX auth_user_auth_user_id ON auth_user (auth_user_id) \
           WHERE auth_user_id IS NOT NULL",
    )
    .await;
    let run = with_config(&env, DJANGO.mapping, &[]).await;
    assert_eq!(run.code, 2, "{}", run.text());
    let lines = problems(&run);
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].starts_with("user-sync: [target] key `auth_user_id` has no unique index"),
        "{}",
        run.stderr
    );

    // Nor can a deferrable unique constraint (ON CONFLICT refuses it as an arbiter).
    run_sql(
        db,
        "DROP INDEX auth_user_auth_user_id; \
         ALTER TABLE auth_user ADD CONSTRAINT auth_user_auth_user_id_key \
           UNIQUE (auth_user_id) DEFERRABLE INITIALLY DEFERRED",
    )
    .await;
    key_index_refused(&env).await;

    // A table that does not exist (refused by a command; `run` waits for it, see
    // startup::target_table_created_later); a mapping the file gets wrong by itself.
    let missing = DJANGO
        .mapping
        .replace("public.auth_user", "public.no_such_table");
    let run = with_config(&env, &missing, &["import", "/dev/null", "--dry-run"]).await;
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("public.no_such_table does not exist"));
    let unqualified = DJANGO.mapping.replace("public.auth_user", "auth_user");
    let run = with_config(&env, &unqualified, &[]).await;
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("`auth_user` is not schema-qualified"),
        "{}",
        run.stderr
    );
}

/// Fails the test unless the binary with Django's mapping exits 2, saying that the key
/// `auth_user_id` has no unique index it can use.
async fn key_index_refused(env: &Env) {
    let run = with_config(env, DJANGO.mapping, &[]).await;
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        problems(&run)
            .iter()
            .any(|l| l.contains("`auth_user_id`") && l.contains("unique index")),
        "{}",
        run.stderr
    );
}

/// `CREATE UNIQUE INDEX CONCURRENTLY` (what `--print-target-sql` gives) that fails, on
/// duplicate keys say, leaves an INVALID index behind; `IF NOT EXISTS` then keeps it. It
/// cannot serve ON CONFLICT: the start must refuse it, not the first upsert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_unique_index_left_by_a_failed_concurrent_build_is_refused() {
    let env = Env::new().await;
    let db = &backend(&env).await;
    run_sql(db, DJANGO.ddl).await;
    let mapping = mapping_of(DJANGO.mapping);
    let sql = target_table_ddl(&mapping);
    let mut statements = sql.split(";\n");
    let (add_column, create_index) = (statements.next().unwrap(), statements.next().unwrap());
    run_sql(db, add_column).await;
    run_sql(
        db,
        "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, \
           email, is_staff, is_active, date_joined, auth_user_id) \
         SELECT '', false, 'dup' || n, '', '', 'dup' || n, false, true, now(), \
           '11111111-1111-1111-1111-111111111111' FROM generate_series(1, 2) n",
    )
    .await;
    let failed = sqlx::query(create_index.trim().trim_end_matches(';'))
        .execute(db)
        .await;
    assert!(failed.is_err(), "duplicate keys");
    run_sql(db, "DELETE FROM auth_user WHERE username = 'dup2'").await;
    let invalid: bool = sqlx::query_scalar(
        "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = 'auth_user_auth_user_id_key'::regclass",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert!(invalid, "the failed build left an invalid index");
    key_index_refused(&env).await;
}

/// A generated column (or an identity GENERATED ALWAYS) named by the mapping is a problem
/// at start, naming the column: the database refuses every write to it (428C9), which
/// would dead-letter every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_column_in_the_mapping_is_refused_at_start() {
    let t = Target::new(
        "CREATE TABLE public.people (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
           email text NOT NULL, lower_email text GENERATED ALWAYS AS (lower(email)) STORED, \
           active boolean NOT NULL)",
        &flag_mapping("public.people", r#"lower_email = "email""#),
    )
    .await;
    t.refused_naming("lower_email", "a generated column is written");
}

/// A NOT NULL column from a role map without `default` (Django's `is_staff`) is a problem
/// at start: every user whose role the map does not name would be refused (23502) and
/// dead-lettered, whatever the column's default (the INSERT names the column).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_null_role_map_without_default_is_refused_at_start() {
    let t = Target::new(
        "CREATE TABLE public.staff (id serial PRIMARY KEY, email text NOT NULL, \
           is_staff boolean NOT NULL DEFAULT false, active boolean NOT NULL)",
        &flag_mapping("public.staff", "is_staff = { role_map = { admin = true } }"),
    )
    .await;
    t.refused_naming("is_staff", "students would all be refused");
}

/// A database user that may read the table but not write it is refused at start, naming
/// the privilege (INSERT and UPDATE on each written column and on the key):
/// `information_schema` shows the columns to any privilege, and every event would
/// otherwise fail with 42501 as its own fault and be dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_that_cannot_write_the_table_is_refused_at_start() {
    let mut env = Env::new().await;
    let role = format!("usync_ro_{}", uuid::Uuid::new_v4().simple());
    let db = PgPool::connect(&env.db.url()).await.unwrap();
    run_sql(
        &db,
        &format!(
            "CREATE TABLE public.people (id serial PRIMARY KEY, email text NOT NULL, \
               active boolean NOT NULL); \
             ALTER TABLE public.people ADD COLUMN auth_user_id uuid; \
             CREATE UNIQUE INDEX people_key ON public.people (auth_user_id); \
             CREATE ROLE {role} LOGIN; \
             GRANT SELECT ON public.people TO {role}"
        ),
    )
    .await;
    env.overrides
        .insert("database_url".into(), pg_url_as(&role, &env.db.name));
    let mut settings = env.settings();
    settings.target_table = Some(mapping_of(&flag_mapping("public.people", "")));
    let store = Store::new(&settings).unwrap();
    let prepared = store.prepare_target_table().await;
    store.pool().close().await;
    run_sql(&db, &format!("DROP OWNED BY {role}; DROP ROLE {role}")).await;
    let problems = prepared.expect_err("the table cannot be written");
    assert!(
        problems
            .iter()
            .any(|p| p.to_string().to_lowercase().contains("privilege")),
        "{problems:?}"
    );
}

/// Mixed-case identifiers can be mapped (ASP.NET Identity's `"AspNetUsers"` with
/// `"Email"` and `"UserName"`): every statement quotes its identifiers.
#[test]
fn a_mixed_case_table_can_be_mapped() {
    let spec = spec_of(
        r#"
        [target]
        table = "public.AspNetUsers"
        key = "auth_user_id"
        [target.columns]
        Email = "email"
        UserName = "email"
        [target.deactivation]
        flag = "active"
        "#,
    );
    assert!(
        TargetTable::resolve(&spec).is_ok(),
        "{:?}",
        TargetTable::resolve(&spec)
    );
}

/// `status` and `explain` with a mapping whose table does not exist: they never call
/// `prepare_target_table`, and must not reach `Store::target_table_sql()` (which expects it): an error,
/// not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_explain_with_a_broken_mapping_do_not_panic() {
    let env = Env::new().await;
    let path = std::env::temp_dir().join(format!("cfg-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, flag_mapping("public.nowhere", "")).unwrap();
    for args in [
        vec!["status"],
        vec!["explain", "user1@example.com"],
        vec!["import", "/dev/null", "--dry-run"],
    ] {
        let mut cmd = env.binary();
        cmd.env("CONFIG_FILE", &path).args(&args);
        let run = run_within(cmd, std::time::Duration::from_secs(30)).await;
        assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.text());
    }
    let _ = std::fs::remove_file(&path);
}

/// Spring's default `authorities` key refers to `users.username`, which the sync writes
/// from the email: without `ON UPDATE CASCADE` it is named at start (a warning: such a
/// write is refused only when the username changes); with it, nothing is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_key_that_would_refuse_a_rewritten_column_is_named() {
    let plain = SPRING.ddl.replace("on update cascade", "");
    let t = Target::new(&plain, SPRING.mapping).await;
    assert_eq!(t.prepared, Ok(()));
    let keys = t.store.target_keys_without_cascade().await.unwrap();
    assert_eq!(
        keys,
        ["`fk_authorities_users` of public.authorities on `username`"]
    );
    let t = Target::new(SPRING.ddl, SPRING.mapping).await;
    let keys = t.store.target_keys_without_cascade().await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}
