//! Computed columns through the real worker: templates over the names with parts missing,
//! the email in lower and upper case, a length limit that truncates on a character
//! boundary or refuses the event, and the start check of lengths and types.

use super::*;
use crate::support::*;
use user_sync::target_table::TargetTable;

const DDL: &str = "CREATE TABLE public.members (id bigserial PRIMARY KEY, \
     email varchar(254) NOT NULL, normalized_email varchar(256), \
     username varchar(60) NOT NULL, name varchar(255) NOT NULL DEFAULT '', \
     display varchar(10), is_staff boolean, active boolean NOT NULL DEFAULT true); \
     CREATE UNIQUE INDEX members_email ON public.members (email); \
     CREATE UNIQUE INDEX members_username ON public.members (username);";

const MAPPING: &str = r#"
[target]
table = "public.members"
key = "auth_user_id"
[target.columns]
email = { field = "email", case = "lower", max_length = 254, too_long = "refuse" }
normalized_email = { field = "email", case = "upper", max_length = 256, too_long = "refuse" }
username = { field = "email", case = "lower", max_length = 60, too_long = "refuse" }
name = { template = "{first_name} {last_name}", max_length = 255, too_long = "truncate" }
display = { template = "{last_name}, {first_name}", max_length = 10, too_long = "truncate" }
[target.deactivation]
flag = "active"
free_email = "deleted+{auth_id}@invalid"
"#;

/// User `n`'s row: (id, email, normalized_email, username, name, display, active).
type Member = (
    i64,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    bool,
);

async fn member(db: &PgPool, n: u8) -> Option<Member> {
    sqlx::query_as(
        "SELECT id, email::text, normalized_email::text, username::text, name::text, \
           display::text, active FROM public.members WHERE auth_user_id = $1",
    )
    .bind(uid(n))
    .fetch_optional(db)
    .await
    .unwrap()
}

/// The members table with the key `--print-target-sql` gives, and `toml`'s mapping.
async fn members(env: &Env, toml: &str) -> (PgPool, TargetTable) {
    let db = backend(env).await;
    let mapping = mapping_of(toml);
    run_sql(&db, DDL).await;
    run_sql(&db, &target_table_ddl(&mapping)).await;
    (db, mapping)
}

async fn start(env: &Env) -> (PgPool, Worker) {
    let (db, mapping) = members(env, MAPPING).await;
    let mut settings = env.settings();
    settings.target_table = Some(mapping);
    (db, env.start_with(settings).await)
}

/// A `kind` event of student `n` with `email` and these names.
fn named(
    kind: &str,
    n: u8,
    ts: &str,
    email: &str,
    names: (Option<&str>, Option<&str>),
) -> serde_json::Value {
    let mut e = event(kind, n, ts, "student", &["lms"]);
    e["user"]["email"] = email.into();
    e["user"]["first_name"] = names.0.into();
    e["user"]["last_name"] = names.1.into();
    e
}

/// Waits until user `n`'s row passes `check`, and returns it.
async fn wait_member(db: &PgPool, n: u8, what: &str, check: impl Fn(&Member) -> bool) -> Member {
    wait_for(what, WAIT, || async {
        member(db, n).await.is_some_and(|m| check(&m))
    })
    .await;
    member(db, n).await.unwrap()
}

/// A missing last name leaves neither a trailing space nor a comma; the email goes to
/// lower and upper case; a name over the display's 10 characters is cut after an emoji and
/// an accented letter, never inside one; an update changing only the last name rewrites
/// both templates and is applied, not "unchanged".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_cases_and_truncation_render_through_the_worker() {
    let env = Env::new().await;
    let (db, worker) = start(&env).await;
    let p = env.publisher().await;
    let ts = "2024-01-01T00:00:00Z";
    p.publish_json(&named(
        "user.created",
        1,
        ts,
        "Ada.Lovelace@Example.COM",
        (Some("Ada"), None),
    ))
    .await;
    p.publish_json(&named(
        "user.created",
        2,
        ts,
        "b@example.com",
        (Some("Ada"), Some("Lovelace😀é")),
    ))
    .await;
    let one = wait_member(&db, 1, "user 1 created", |_| true).await;
    assert_eq!(one.1, "ada.lovelace@example.com");
    assert_eq!(one.2.as_deref(), Some("ADA.LOVELACE@EXAMPLE.COM"));
    assert_eq!(one.3, "ada.lovelace@example.com");
    assert_eq!((one.4.as_str(), one.5.as_deref()), ("Ada", Some("Ada")));
    let two = wait_member(&db, 2, "user 2 created", |_| true).await;
    assert_eq!(two.4, "Ada Lovelace😀é");
    assert_eq!(
        two.5.as_deref(),
        Some("Lovelace😀é"),
        "cut to 10 characters"
    );

    let update = named(
        "user.updated",
        2,
        "2024-01-02T00:00:00Z",
        "b@example.com",
        (Some("Ada"), Some("Byron")),
    );
    p.publish_json(&update).await;
    let two = wait_member(&db, 2, "user 2 renamed", |m| m.4 == "Ada Byron").await;
    assert_eq!(two.5.as_deref(), Some("Byron, Ada"));
    let trail = env.store().trail(uid(2), 10).await.unwrap();
    let newest = &trail[0];
    assert_eq!(newest.decision, "applied", "{trail:?}");
    assert!(
        newest.changed.contains(&"last_name".to_string()),
        "{trail:?}"
    );
    assert_eq!(dlq_depth(&env).await, 0);
    worker.stop().await;
}

/// User 1, Ada Lovelace at a@example.com, created on 2024-01-01 and seen in the table.
async fn ada_created(p: &Publisher, db: &PgPool) -> Member {
    let names = (Some("Ada"), Some("Lovelace"));
    p.publish_json(&named(
        "user.created",
        1,
        "2024-01-01T00:00:00Z",
        "a@example.com",
        names,
    ))
    .await;
    wait_member(db, 1, "user 1 created", |_| true).await
}

/// An email over the username's max_length (refuse) dead-letters its event at once as
/// `permanent`, naming the column and the lengths but not the email; nothing of it is
/// applied, the watermark stays; a later valid event applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_over_max_length_is_refused_and_nothing_of_it_applied() {
    let env = Env::new().await;
    let (db, worker) = start(&env).await;
    let p = env.publisher().await;
    let before = ada_created(&p, &db).await;
    let long = format!("{}@example.com", "x".repeat(58));
    let renamed = (Some("Refused"), Some("Lovelace"));
    p.publish_json(&named(
        "user.updated",
        1,
        "2024-01-02T00:00:00Z",
        &long,
        renamed,
    ))
    .await;
    env.wait_dead_letters(1, "the over-long event", WAIT).await;
    let dead = env.dead_letters().await;
    assert_dead_letter(&dead[0], "permanent", 1);
    let error = header(&dead[0], "x-error").unwrap();
    assert!(
        error.contains("`username`")
            && error.contains("70 characters")
            && error.contains("max_length of 60"),
        "{error}"
    );
    assert!(!error.contains("xxxx"), "the value stays out: {error}");
    assert_eq!(member(&db, 1).await.unwrap(), before, "nothing applied");
    let watermark: String = sqlx::query_scalar(
        "SELECT to_char(event_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM user_watermarks \
         WHERE auth_user_id = $1",
    )
    .bind(uid(1))
    .fetch_one(env.store().pool())
    .await
    .unwrap();
    assert_eq!(watermark, "2024-01-01");
    let trail = env.store().trail(uid(1), 10).await.unwrap();
    assert_eq!(trail[0].decision, "dead-lettered", "{trail:?}");

    let later = (Some("Later"), Some("Lovelace"));
    p.publish_json(&named(
        "user.updated",
        1,
        "2024-01-03T00:00:00Z",
        "a@example.com",
        later,
    ))
    .await;
    wait_member(&db, 1, "the later event applied", |m| {
        m.4 == "Later Lovelace"
    })
    .await;
    worker.stop().await;
}

/// An event that deactivates its user (`is_active: false`) with a value over a refusing
/// max_length still deactivates the row: a deactivation is never lost to a column's length
/// (the user would keep signing in), though the over-long fields are not written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivation_with_a_value_over_max_length_still_deactivates() {
    let env = Env::new().await;
    let (db, worker) = start(&env).await;
    let p = env.publisher().await;
    let names = (Some("Ada"), Some("Lovelace"));
    ada_created(&p, &db).await;
    let long = format!("{}@example.com", "x".repeat(58));
    let mut inactive = named("user.updated", 1, "2024-01-02T00:00:00Z", &long, names);
    inactive["user"]["is_active"] = false.into();
    p.publish_json(&inactive).await;
    let row = wait_member(&db, 1, "user 1 deactivated", |m| !m.6).await;
    assert_eq!(row.1, "a@example.com", "the over-long email is not written");
    worker.stop().await;
}

/// A legacy row with a mixed-case email is adopted by the lower-cased email column (and
/// rewritten in lower case); when its user is deleted and another takes the email, the
/// tombstone goes to every email column in that column's case, and stays through an
/// update that leaves the user deactivated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_and_freed_emails_follow_each_columns_case() {
    let env = Env::new().await;
    let (db, worker) = start(&env).await;
    run_sql(
        &db,
        "INSERT INTO public.members (email, username, name) \
         VALUES ('USER1@Example.COM', 'legacy', 'Legacy')",
    )
    .await;
    let legacy: i64 = scalar(&db, "SELECT id FROM public.members").await;
    let p = env.publisher().await;
    let names = (Some("Ada"), Some("Lovelace"));
    p.publish_json(&named(
        "user.created",
        1,
        "2024-01-01T00:00:00Z",
        "User1@Example.com",
        names,
    ))
    .await;
    let adopted = wait_member(&db, 1, "legacy row adopted", |_| true).await;
    assert_eq!(
        (adopted.0, adopted.1.as_str()),
        (legacy, "user1@example.com")
    );
    p.publish_json(&event(
        "user.deleted",
        1,
        "2024-01-02T00:00:00Z",
        "student",
        &[],
    ))
    .await;
    wait_member(&db, 1, "user 1 deleted", |m| !m.6).await;
    p.publish_json(&named(
        "user.created",
        2,
        "2024-01-03T00:00:00Z",
        "user1@EXAMPLE.com",
        names,
    ))
    .await;
    wait_member(&db, 2, "user 2 takes the email", |m| {
        m.1 == "user1@example.com"
    })
    .await;
    let tomb = format!("deleted+{}@invalid", uid(1));
    let freed = member(&db, 1).await.unwrap();
    assert_eq!(
        (freed.1.as_str(), freed.2.as_deref(), freed.3.as_str()),
        (
            tomb.as_str(),
            Some(tomb.to_uppercase().as_str()),
            tomb.as_str()
        )
    );
    let mut inactive = named(
        "user.updated",
        1,
        "2024-01-04T00:00:00Z",
        "user1@example.com",
        (Some("Still"), None),
    );
    inactive["user"]["is_active"] = false.into();
    p.publish_json(&inactive).await;
    let kept = wait_member(&db, 1, "user 1 updated, inactive", |m| m.4 == "Still").await;
    assert_eq!((kept.1, kept.2, kept.3), (freed.1, freed.2, freed.3));
    assert_eq!(dlq_depth(&env).await, 0);
    worker.stop().await;
}

/// At start: a max_length over the varchar's length, a template into a boolean and a
/// tombstone over an email column's max_length each exit 2 with a line naming the column;
/// a varchar column written without max_length only warns, and the service starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lengths_and_types_are_checked_at_start() {
    let env = Env::new().await;
    let (_db, _) = members(&env, MAPPING).await;
    let bad = MAPPING
        .replace("max_length = 10,", "max_length = 11,")
        .replace("max_length = 60,", "max_length = 40,")
        .replace(
            "[target.deactivation]",
            "is_staff = { template = \"{role}\" }\n[target.deactivation]",
        );
    let run = with_config(&env, &bad, &[]).await;
    assert_eq!(run.code, 2, "{}", run.text());
    let lines = problems(&run);
    assert_eq!(lines.len(), 3, "{}", run.stderr);
    for (column, says) in [
        (
            "`display`",
            "max_length 11 is over the column's varchar(10)",
        ),
        ("`is_staff`", "is bool, expected one of text"),
        (
            "`username`",
            "the tombstone takes 52 characters, over column `username`'s max_length 40",
        ),
    ] {
        assert!(
            lines.iter().any(|l| l.contains(column) && l.contains(says)),
            "{column} {says}: {}",
            run.stderr
        );
    }
    let unlimited = MAPPING.replace(
        "name = { template = \"{first_name} {last_name}\", max_length = 255, too_long = \"truncate\" }",
        "name = \"first_name\"",
    );
    let file = ConfigFile::new(&unlimited);
    let mut cmd = env.binary();
    cmd.env("CONFIG_FILE", &file.path);
    let running = Draining::start(env.spawn_consuming(&mut cmd).await);
    let text = running.stop(WAIT).await;
    assert!(
        text.contains("column `name` is varchar(255) and has no max_length"),
        "{text}"
    );
}

/// An event over a refusing max_length that is older than what its user already has
/// (a late or redelivered update) is stale, as it would be with a short value: acked,
/// never dead-lettered, and the row keeps the newer event's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_event_over_max_length_is_stale_not_dead_lettered() {
    let env = Env::new().await;
    let (db, worker) = start(&env).await;
    let p = env.publisher().await;
    let names = (Some("Ada"), Some("Lovelace"));
    let newer = named(
        "user.created",
        1,
        "2024-01-03T00:00:00Z",
        "a@example.com",
        names,
    );
    p.publish_json(&newer).await;
    let before = wait_member(&db, 1, "user 1 created", |_| true).await;
    let long = format!("{}@example.com", "x".repeat(58));
    let late = named("user.updated", 1, "2024-01-02T00:00:00Z", &long, names);
    p.publish_json(&late).await;
    // A later event of another user: once it is applied and the worker has stopped (its
    // batch in hand settled), the late one was settled.
    let other = named(
        "user.created",
        2,
        "2024-01-02T00:00:00Z",
        "b@example.com",
        names,
    );
    p.publish_json(&other).await;
    wait_member(&db, 2, "user 2 created", |_| true).await;
    worker.stop().await;
    assert_eq!(
        dlq_depth(&env).await,
        0,
        "the stale event is not dead-lettered"
    );
    assert_eq!(member(&db, 1).await.unwrap(), before);
}
