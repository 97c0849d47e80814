//! Adversarial tests of the `[target]` mapping (sync into the backend's own table): column
//! shapes the start-up check lets through but every event then fails on (each one isolated
//! and dead-lettered: a configuration mistake turned into data in the DLQ), privileges,
//! types outside the service's search path, values that try to escape their quotes, and
//! the printed DDL run as-is by psql.

use crate::helpers::*;
use config::{Config, File, FileFormat};
use sqlx::PgPool;
use std::process::Command;
use user_sync::decide::{self, Planned};
use user_sync::store::{EventResult, Store, target_table_ddl};
use user_sync::target_table::{TargetSpec, TargetTable};

fn spec_of(toml: &str) -> TargetSpec {
    Config::builder()
        .add_source(File::from_str(toml, FileFormat::Toml))
        .build()
        .unwrap()
        .get("target")
        .unwrap()
}

fn mapping_of(toml: &str) -> TargetTable {
    TargetTable::resolve(&spec_of(toml)).unwrap()
}

async fn run_sql(db: &PgPool, sql: &str) {
    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::query(statement)
            .execute(db)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

/// A test database holding the backend's `ddl` plus what `target_table_ddl` prints, and a store
/// (migrated) with the mapping; the result of `prepare_target_table` as problem lines.
struct Target {
    _env: Env,
    db: PgPool,
    store: Store,
    prepared: Result<(), Vec<String>>,
}

impl Target {
    async fn new(ddl: &str, toml: &str) -> Self {
        let env = Env::new().await;
        Self::in_env(env, ddl, toml).await
    }

    async fn in_env(env: Env, ddl: &str, toml: &str) -> Self {
        let db = PgPool::connect(&env.db.url()).await.unwrap();
        run_sql(&db, ddl).await;
        let mapping = mapping_of(toml);
        run_sql(&db, &target_table_ddl(&mapping)).await;
        let mut settings = env.settings();
        settings.target_table = Some(mapping);
        let store = Store::new(&settings).unwrap();
        store.migrate().await.unwrap();
        let prepared = store
            .prepare_target_table()
            .await
            .map_err(|p| p.iter().map(ToString::to_string).collect());
        Self {
            _env: env,
            db,
            store,
            prepared,
        }
    }

    /// Applies `events` as one batch; each event's result, in order.
    async fn apply(&self, events: &[serde_json::Value]) -> Vec<EventResult> {
        let planned: Vec<Planned> = events.iter().map(planned).collect();
        let (users, _) = decide::reduce(&planned);
        let mut results = self.store.apply(&planned, &users).await.unwrap();
        results.sort_by_key(|r| r.0);
        results.dedup_by_key(|r| r.0);
        results.into_iter().map(|r| r.1).collect()
    }

    async fn text(&self, sql: &str) -> Option<String> {
        sqlx::query_scalar(sql)
            .bind(uid(1))
            .fetch_optional(&self.db)
            .await
            .unwrap()
    }
}

fn applied(results: &[EventResult]) -> bool {
    results.iter().all(|r| matches!(r, EventResult::Done(_)))
}

fn created(user: u8) -> serde_json::Value {
    event(
        "user.created",
        user,
        "2024-01-01T00:00:00Z",
        "student",
        &["lms"],
    )
}

// ---------------------------------------------------------------------------------------
// HIGH: the start-up check passes, then every event is rejected (and dead-lettered).
// ---------------------------------------------------------------------------------------

/// `allowed_services` into a NOT NULL text column: the generated SQL wraps every Field
/// source of a NOT NULL text column in `coalesce(.., '')`, and for services that is
/// `coalesce(i.services::jsonb, '')`: the literal '' is parsed as jsonb, so every upsert
/// fails with 22P02 (`invalid input syntax for type json`). Fixed in `store/target_table/sql.rs`:
/// services are never NULL (the batch always binds a JSON array), so no coalesce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_into_a_not_null_text_column_sync() {
    let t = Target::new(
        "CREATE TABLE public.accounts (id serial PRIMARY KEY, email text NOT NULL, \
           services text NOT NULL DEFAULT '[]', active boolean NOT NULL)",
        r#"
        [target]
        table = "public.accounts"
        key = "auth_user_id"
        [target.columns]
        email = "email"
        services = "allowed_services"
        [target.deactivation]
        flag = "active"
        "#,
    )
    .await;
    assert_eq!(t.prepared, Ok(()));
    let results = t.apply(&[created(1)]).await;
    assert!(applied(&results), "{results:?}");
    let services = t
        .text("SELECT services FROM public.accounts WHERE auth_user_id = $1")
        .await;
    assert_eq!(services.as_deref(), Some(r#"["lms"]"#));
}

/// A NOT NULL reason column (Rails' `null: false, default: ""`): an active user has no
/// reason, the generated SQL writes NULL into it, and every active user is rejected
/// (23502). The check accepted the column. Fixed in `store/target_table/sql.rs`: a NOT NULL reason
/// column gets '' for "no reason", as the text fields do; the reads take '' as none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_null_reason_column_takes_active_users() {
    let t = Target::new(
        "CREATE TABLE public.members (id bigserial PRIMARY KEY, email varchar NOT NULL, \
           active boolean NOT NULL DEFAULT true, \
           deactivation_reason varchar NOT NULL DEFAULT '')",
        r#"
        [target]
        table = "public.members"
        key = "auth_user_id"
        [target.columns]
        email = "email"
        [target.deactivation]
        flag = "active"
        reason = "deactivation_reason"
        "#,
    )
    .await;
    assert_eq!(t.prepared, Ok(()));
    let results = t.apply(&[created(1)]).await;
    assert!(applied(&results), "{results:?}");
    let deleted = event("user.deleted", 1, "2024-01-02T00:00:00Z", "student", &[]);
    let results = t.apply(&[deleted]).await;
    assert!(applied(&results), "{results:?}");
    let reason = t
        .text("SELECT deactivation_reason::text FROM public.members WHERE auth_user_id = $1")
        .await;
    assert_eq!(reason.as_deref(), Some("deleted"));
    // Reactivated: the reason is cleared again ('' in a NOT NULL column).
    let back = event(
        "user.updated",
        1,
        "2024-01-03T00:00:00Z",
        "student",
        &["lms"],
    );
    let results = t.apply(&[back]).await;
    assert!(applied(&results), "{results:?}");
    let counts = t.store.user_counts().await.unwrap();
    assert_eq!(counts.active, 1, "{counts:?}");
    assert!(counts.inactive.is_empty(), "{counts:?}");
}

/// Types outside the service's search path (`search_path` is DATABASE_SCHEMA alone): a
/// `citext` email (the extension lives in `public`) and an enum of the backend's. Every
/// value is cast to `"<udt_name>"` unqualified, which does not resolve: 42704 on every
/// event, classified as the event's fault, so every event is dead-lettered. Fixed in
/// `store/target_table/`: the cast names the type's schema (`udt_schema`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_outside_the_service_search_path_sync() {
    let t = Target::new(
        "CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public; \
         CREATE SCHEMA app; \
         CREATE TYPE app.kind AS ENUM ('staff', 'member'); \
         CREATE TABLE app.people (id bigserial PRIMARY KEY, email public.citext NOT NULL, \
           kind app.kind NOT NULL, active boolean NOT NULL)",
        r#"
        [target]
        table = "app.people"
        key = "auth_user_id"
        [target.columns]
        email = "email"
        kind = { role_map = { teacher = "staff" }, default = "member" }
        [target.deactivation]
        flag = "active"
        "#,
    )
    .await;
    assert_eq!(t.prepared, Ok(()));
    let results = t.apply(&[created(1)]).await;
    assert!(applied(&results), "{results:?}");
    let kind = t
        .text("SELECT kind::text FROM app.people WHERE auth_user_id = $1")
        .await;
    assert_eq!(kind.as_deref(), Some("member"));
    let found = t.store.find_users("USER1@example.com").await.unwrap();
    assert_eq!(found, vec![uid(1)]);
}

// ---------------------------------------------------------------------------------------
// MEDIUM: the start-up check should refuse (exit 2) what can never be written.
// ---------------------------------------------------------------------------------------

/// A generated column named by the mapping: `has_default` counts `is_generated`, and
/// nothing checks that a written column may be written. Every event then fails (428C9)
/// and is dead-lettered. Fixed in `store/target_table/check.rs`: a written column that is generated,
/// or an identity GENERATED ALWAYS, is a problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_column_in_the_mapping_is_refused_at_start() {
    let t = Target::new(
        "CREATE TABLE public.people (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
           email text NOT NULL, lower_email text GENERATED ALWAYS AS (lower(email)) STORED, \
           active boolean NOT NULL)",
        r#"
        [target]
        table = "public.people"
        key = "auth_user_id"
        [target.columns]
        email = "email"
        lower_email = "email"
        [target.deactivation]
        flag = "active"
        "#,
    )
    .await;
    let problems = t
        .prepared
        .clone()
        .expect_err("a generated column is written");
    assert!(
        problems.iter().any(|p| p.contains("lower_email")),
        "{problems:?}"
    );
}

/// A NOT NULL column from a role map without `default` (Django's `is_staff`): every user
/// whose role the map does not name is refused by the database (23502) and
/// dead-lettered. A column default does not help (the INSERT names the column). Fixed in
/// `store/target_table/check.rs`: such a mapping is a problem at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_null_role_map_without_default_is_refused_at_start() {
    let t = Target::new(
        "CREATE TABLE public.staff (id serial PRIMARY KEY, email text NOT NULL, \
           is_staff boolean NOT NULL DEFAULT false, active boolean NOT NULL)",
        r#"
        [target]
        table = "public.staff"
        key = "auth_user_id"
        [target.columns]
        email = "email"
        is_staff = { role_map = { admin = true } }
        [target.deactivation]
        flag = "active"
        "#,
    )
    .await;
    let problems = t
        .prepared
        .clone()
        .expect_err("students would all be refused");
    assert!(
        problems.iter().any(|p| p.contains("is_staff")),
        "{problems:?}"
    );
}

/// The service's database user may read the table but not write it: `information_schema`
/// shows the columns to any privilege, so the check passes, and every event then fails
/// with 42501, which `classify` isolates as the event's fault: every event dead-lettered
/// instead of exit 2. Fixed in `store/target_table/check.rs`: INSERT and UPDATE on each written column
/// (and the key) are checked with `has_column_privilege`.
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
    settings.target_table = Some(mapping_of(
        r#"
        [target]
        table = "public.people"
        key = "auth_user_id"
        [target.columns]
        email = "email"
        [target.deactivation]
        flag = "active"
        "#,
    ));
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

// ---------------------------------------------------------------------------------------
// LOW: limitations (lifted).
// ---------------------------------------------------------------------------------------

/// FAILED BEFORE (identifiers had to be plain lower case): ASP.NET Identity's
/// `"AspNetUsers"` (columns `"Email"`, `"UserName"`) could not be mapped at all, although
/// every statement quotes its identifiers.
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

// ---------------------------------------------------------------------------------------
// Hold (regressions): these pass.
// ---------------------------------------------------------------------------------------

/// Constants, role-map keys and values, and the prefix are bound, never spliced: quotes,
/// `$1`, semicolons and comments arrive as data. Identifiers with quotes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_values_cannot_inject_sql() {
    let t = Target::new(
        "CREATE TABLE public.accts (id serial PRIMARY KEY, email text NOT NULL, \
           note text NOT NULL, badge text, pw text, active boolean NOT NULL)",
        r#"
        [target]
        table = "public.accts"
        key = "auth_user_id"
        [target.columns]
        email = "email"
        note = { constant = "x'); DROP TABLE public.accts; --" }
        badge = { role_map = { "stu'dent" = "it's $1", student = "o'k\"; --" }, default = "'" }
        pw = { field = "password_hash", prefix = "p'$10$" }
        [target.deactivation]
        flag = "active"
        "#,
    )
    .await;
    assert_eq!(t.prepared, Ok(()));
    let results = t.apply(&[created(1)]).await;
    assert!(applied(&results), "{results:?}");
    let row: (String, String, String) =
        sqlx::query_as("SELECT note, badge, pw FROM public.accts WHERE auth_user_id = $1")
            .bind(uid(1))
            .fetch_one(&t.db)
            .await
            .unwrap();
    assert_eq!(row.0, "x'); DROP TABLE public.accts; --");
    assert_eq!(row.1, "o'k\"; --");
    assert_eq!(row.2, format!("p'$10${HASH}"));
    for bad in [
        r#"table = "public.x\"; DROP TABLE y; --""#,
        r#"table = "public.accts"
        key = "k\"--""#,
    ] {
        let toml = format!(
            "[target]\n{bad}\n{}\n[target.columns]\nemail = \"email\"\n[target.deactivation]\nflag = \"active\"\n",
            if bad.contains("key") {
                ""
            } else {
                "key = \"k\""
            }
        );
        assert!(TargetTable::resolve(&spec_of(&toml)).is_err(), "{toml}");
    }
}

/// A text key column, a batch with a row the backend's trigger refuses (only that event
/// is rejected), and `explain`/`status` reads on the mapped table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_key_isolates_a_refused_row_and_reads_back() {
    let t = Target::new(
        "CREATE TABLE public.users2 (id serial PRIMARY KEY, email text NOT NULL, \
           first_name text, active boolean NOT NULL, why text); \
         ALTER TABLE public.users2 ADD COLUMN ext_id text; \
         CREATE UNIQUE INDEX users2_ext ON public.users2 (ext_id)",
        r#"
        [target]
        table = "public.users2"
        key = "ext_id"
        [target.columns]
        email = "email"
        first_name = "first_name"
        [target.deactivation]
        flag = "active"
        reason = "why"
        "#,
    )
    .await;
    assert_eq!(t.prepared, Ok(()));
    sqlx::query(
        "CREATE FUNCTION public.refuse2() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.first_name = 'Refused' THEN RAISE EXCEPTION 'no'; END IF; RETURN NEW; END $$",
    )
    .execute(&t.db)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse2 BEFORE INSERT OR UPDATE ON public.users2 \
         FOR EACH ROW EXECUTE FUNCTION public.refuse2()",
    )
    .execute(&t.db)
    .await
    .unwrap();
    let mut refused = created(2);
    refused["user"]["first_name"] = "Refused".into();
    let results = t.apply(&[created(1), refused, created(3)]).await;
    assert!(matches!(results[0], EventResult::Done(_)), "{results:?}");
    assert!(
        matches!(results[1], EventResult::Rejected(_)),
        "{results:?}"
    );
    assert!(matches!(results[2], EventResult::Done(_)), "{results:?}");
    assert_eq!(
        t.store.find_users("User1@Example.com").await.unwrap(),
        vec![uid(1)]
    );
    let view = t.store.row_view(uid(1)).await.unwrap().expect("a row");
    assert!(view.is_active);
    let counts = t.store.user_counts().await.unwrap();
    assert_eq!(counts.active, 2, "{counts:?}");
}

/// The printed DDL runs as-is with `psql -f` (each statement in autocommit, so
/// CONCURRENTLY is allowed) and twice (IF NOT EXISTS). Piping it through `psql -c` (one
/// implicit transaction) is refused by Postgres: the README should say `-f`/stdin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_target_sql_runs_with_psql() {
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

/// `status` and `explain` with a mapping whose table does not exist: they never call
/// `prepare_target_table`, and must not reach `Store::target_table_sql()` (which expects it): an error,
/// not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_explain_with_a_broken_mapping_do_not_panic() {
    let env = Env::new().await;
    let path = std::env::temp_dir().join(format!("cfg-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(
        &path,
        r#"
        [target]
        table = "public.nowhere"
        key = "auth_user_id"
        [target.columns]
        email = "email"
        [target.deactivation]
        flag = "active"
        "#,
    )
    .unwrap();
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
