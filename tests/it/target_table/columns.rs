//! Column shapes a mapping writes: NOT NULL text and reason columns, types from other
//! schemas, a text key, values that try to escape their quotes. Each is one the start-up
//! check accepts, so each must then sync: a mistake here turns every event into a dead
//! letter.

use super::*;
use crate::support::*;
use user_sync::store::EventResult;
use user_sync::target_table::TargetTable;

/// `allowed_services` written into a NOT NULL text column syncs, as the JSON array:
/// services are never NULL, so they get no `coalesce(.., '')` as NOT NULL text fields do
/// (`''` read as jsonb fails every upsert with 22P02).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_into_a_not_null_text_column_sync() {
    let t = Target::new(
        "CREATE TABLE public.accounts (id serial PRIMARY KEY, email text NOT NULL, \
           services text NOT NULL DEFAULT '[]', active boolean NOT NULL)",
        &flag_mapping("public.accounts", r#"services = "allowed_services""#),
    )
    .await;
    t.creates_user_1().await;
    let services = t
        .text("SELECT services FROM public.accounts WHERE auth_user_id = $1")
        .await;
    assert_eq!(services.as_deref(), Some(r#"["lms"]"#));
}

/// A NOT NULL reason column (Rails' `null: false, default: ""`) takes active users: "no
/// reason" is written there as `''`, read back as none, and written again on reactivation.
/// NULL would have every active user refused (23502).
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
    t.creates_user_1().await;
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

/// Column types outside the service's search path (`search_path` is DATABASE_SCHEMA
/// alone), a `citext` email from `public` and an enum of the backend's own schema, sync:
/// every cast names the type's schema. An unqualified cast would fail every event
/// (42704), each as its own fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_outside_the_service_search_path_sync() {
    let t = Target::new(
        "CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public; \
         CREATE SCHEMA app; \
         CREATE TYPE app.kind AS ENUM ('staff', 'member'); \
         CREATE TABLE app.people (id bigserial PRIMARY KEY, email public.citext NOT NULL, \
           kind app.kind NOT NULL, active boolean NOT NULL)",
        &flag_mapping(
            "app.people",
            r#"kind = { role_map = { teacher = "staff" }, default = "member" }"#,
        ),
    )
    .await;
    t.creates_user_1().await;
    let kind = t
        .text("SELECT kind::text FROM app.people WHERE auth_user_id = $1")
        .await;
    assert_eq!(kind.as_deref(), Some("member"));
    let found = t.store.find_users("USER1@example.com").await.unwrap();
    assert_eq!(found, vec![uid(1)]);
}

/// Constants, role-map keys and values, and the prefix are bound, never spliced: quotes,
/// `$1`, semicolons and comments arrive as data. Identifiers with quotes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_values_cannot_inject_sql() {
    let t = Target::new(
        "CREATE TABLE public.accts (id serial PRIMARY KEY, email text NOT NULL, \
           note text NOT NULL, badge text, pw text, active boolean NOT NULL)",
        &flag_mapping(
            "public.accts",
            r#"
            note = { constant = "x'); DROP TABLE public.accts; --" }
            badge = { role_map = { "stu'dent" = "it's $1", student = "o'k\"; --" }, default = "'" }
            pw = { field = "password_hash", prefix = "p'$10$" }
            "#,
        ),
    )
    .await;
    t.creates_user_1().await;
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
