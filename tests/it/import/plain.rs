//! A plain import: applied like events dated `--as-of`, reruns change nothing, live events
//! newer than the export win, and what it reports reads plainly.

use super::*;
use crate::support::*;
use std::time::Duration;

fn numbered(i: u32) -> serde_json::Value {
    let (role, services): (&str, &[&str]) = match i % 10 {
        0 => ("teacher", &[]),
        1..=6 => ("student", &["lms"]),
        _ => ("student", &["sat"]),
    };
    let mut r = record(1, role, services);
    r["id"] = uuid::Uuid::from_u128(0x1000_0000 + i as u128)
        .to_string()
        .into();
    r["email"] = format!("import{i}@example.com").into();
    r["first_name"] = "Imported".into();
    r["last_name"] = format!("User {i}").into();
    r
}

fn import(env: &Env, args: &[&str]) -> Run {
    env.command(&[&["import"], args].concat())
}

/// Ten thousand users imported: the table converges, invalid records are reported by line, a
/// live event newer than the export stands, and a rerun changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_users_converge_a_rerun_changes_nothing_and_live_events_win() {
    let env = Env::new().await;
    let worker = env.start().await;
    // A live event newer than the export for user 5: the import must not undo it.
    let mut live = serde_json::json!({
        "event_type": "user.updated",
        "user_id": numbered(5)["id"],
        "user": numbered(5),
        "timestamp": "2025-06-01T00:00:00Z",
    });
    live["user"]["email"] = "live5@example.com".into();
    env.publisher().await.publish_json(&live).await;
    let store = env.store();
    wait_for("live event applied", Duration::from_secs(20), || async {
        count(&store, "SELECT count(*) FROM users").await == 1
    })
    .await;
    worker.stop().await;

    let dir = std::env::temp_dir().join(format!("usync-import-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("users.jsonl");
    let mut lines: Vec<String> = (0..10_000).map(|i| numbered(i).to_string()).collect();
    lines[16] = "{not json".into();
    let mut bad_hash = numbered(99);
    bad_hash["password_hash"] = "plaintext".into();
    lines[99] = bad_hash.to_string();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let path = file.to_str().unwrap();

    let out = import(&env, &[path, "--as-of", "2025-01-01T00:00:00Z", "--json"]);
    assert_eq!(
        out.code, 3,
        "done, but two records were rejected: {}",
        out.stderr
    );
    let s = out.json();
    assert_eq!(s["records"], 10_000);
    let invalid: Vec<u64> = s["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_u64().unwrap())
        .collect();
    assert_eq!(invalid, [17, 100]);
    // Lines 17 and 100 are records 16 (lms) and 99 (sat); record 5 (lms) is stale.
    let lms = (0..10_000u32).filter(|i| i % 10 <= 6).count() as u64;
    assert_eq!(s["outcomes"]["created"].as_u64(), Some(lms - 2));
    assert_eq!(s["outcomes"]["stale"], 1);
    let active = count(&store, "SELECT count(*) FROM users WHERE is_active").await;
    assert_eq!(active as u64, lms - 1);
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE auth_user_id = $1")
        .bind(uuid::Uuid::from_u128(0x1000_0005))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(email, "live5@example.com", "the newer live event stands");

    let Run {
        code, stdout: out, ..
    } = import(&env, &[path, "--as-of", "2025-01-01T00:00:00Z"]);
    assert_eq!(code, 3);
    assert!(out.contains("changed: 0\n"), "{out}");
    let total = count(&store, "SELECT count(*) FROM users").await;
    assert_eq!(total as u64, lms - 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A dry run counts what an import would do and writes nothing, and the summary reads plainly
/// where no terminal is attached (no progress bar, no escape codes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_counts_and_writes_nothing_and_the_summary_reads_plainly() {
    let env = Env::new().await;
    let dir = std::env::temp_dir().join(format!("usync-import-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("users.json");
    let mut with_time = numbered(1);
    with_time["timestamp"] = "2024-03-01T00:00:00Z".into();
    let no_time = numbered(2);
    let sat = {
        let mut r = numbered(8);
        r["timestamp"] = "2024-03-01T00:00:00Z".into();
        r
    };
    let body = serde_json::json!([with_time, no_time, sat]);
    std::fs::write(&file, body.to_string()).unwrap();
    let path = file.to_str().unwrap();

    let Run {
        code, stdout: out, ..
    } = import(&env, &[path, "--dry-run"]);
    assert_eq!(code, 3, "one record was rejected");
    // The non-TTY output, whole: no progress bar, no escape codes.
    assert_eq!(
        out,
        "records: 3\n\
         would change: 1\n  \
           created: 1\n  \
           not-for-this-service: 1\n\
         invalid: 1\n  \
           item 2: no timestamp, and no --as-of given\n\
         dry run: nothing was written\n"
    );
    let store = env.store();
    assert_eq!(count(&store, "SELECT count(*) FROM users").await, 0);
    assert_eq!(
        count(&store, "SELECT count(*) FROM user_watermarks").await,
        0
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `import` refuses a record dated past MAX_FUTURE_SKEW_SECS as the worker refuses such
/// an event: a mistyped year (9024) would win every comparison and make every live event
/// of that user stale for 7000 years.
#[tokio::test]
async fn import_refuses_a_far_future_timestamp() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let record = serde_json::json!({
        "id": uid(1).to_string(), "email": "user1@example.com", "role": "student",
        "password_hash": HASH, "allowed_services_json": "[\"lms\"]",
        "timestamp": "9024-01-01T00:00:00Z",
    });
    let opts = user_sync::ops::import::ImportOptions {
        as_of: None,
        batch_size: 100,
        ..Default::default()
    };
    let summary = env
        .import_text(&format!("{record}\n"), &opts)
        .await
        .unwrap();
    assert_eq!(
        summary.invalid.len(),
        1,
        "a record dated 9024 must be refused as the worker refuses it: {summary:?}"
    );
    assert!(row(&store, 1).await.is_none());
}

/// Adopting a row the backend had before the sync (email, names, role; no auth id) is
/// reported as a change even when the record's fields equal the row's (an export without
/// password hashes, SSO users): the run linked the row to the auth user, and "unchanged"
/// in the summary, a dry run's ids and the audit trail would hide it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopting_a_legacy_row_is_reported_as_a_change() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    sqlx::query(
        "INSERT INTO users (email, first_name, last_name, role) \
         VALUES ('user1@example.com', 'Test', 'User 1', 'teacher')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let mut sso = record(1, "teacher", &[]);
    sso.as_object_mut().unwrap().remove("password_hash");
    let export = Export::new(&env, "sso", lines(&[sso]));

    let out = env
        .command_within(&["import", export.path(), "--as-of", T, "--json"], LIMIT)
        .await;
    assert_eq!(out.code, 0, "{}", out.text());
    let linked = count(
        &store,
        &format!(
            "SELECT count(*) FROM users WHERE auth_user_id = '{}'",
            uid(1)
        ),
    )
    .await;
    assert_eq!(linked, 1, "the legacy row was adopted");
    let s = out.json();
    assert_eq!(
        s["outcomes"]["unchanged"],
        Value::Null,
        "the adoption changed the row (it now carries the auth id): {s}"
    );
}

/// A `[target]` table that does not fit exits 2 from `import` as from `run`: exit 1
/// ("failed") would have a script retry a configuration mistake as if the database were
/// down. (A table that does not exist yet is waited for by `run`, refused by `import`:
/// `startup::target_table_created_later`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_that_does_not_fit_exits_2_from_import() {
    let env = Env::new().await;
    // The table exists, without the key column the mapping names.
    run_sql(
        &backend(&env).await,
        "CREATE TABLE public.misfit (email text, is_active boolean)",
    )
    .await;
    let config = std::env::temp_dir().join(format!("{}-target.toml", env.db.name));
    std::fs::write(
        &config,
        "[target]\ntable = \"public.misfit\"\nkey = \"auth_user_id\"\n\
         [target.columns]\nemail = \"email\"\n[target.deactivation]\nflag = \"is_active\"\n",
    )
    .unwrap();
    let env = env.set("config_file", config.to_str().unwrap());
    let export = Export::new(&env, "plain", lines(&[student(1)]));
    let run = env.command_within(&["run"], LIMIT).await;
    let import = env
        .command_within(&["import", export.path(), "--as-of", T], LIMIT)
        .await;
    let _ = std::fs::remove_file(&config);
    assert_eq!(run.code, 2, "run: {}", run.text());
    assert_eq!(import.code, 2, "import: {}", import.text());
}

/// `import` through PgBouncer in transaction pooling exits 2 naming `pool_mode = session`
/// before it writes anything, as `run` does: session settings do not hold there, and the
/// import would write wherever the pooler's server session points its `search_path`
/// (nothing may land in `public`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_through_transaction_pooling_is_refused_as_configuration() {
    let bouncer = Bouncer::start(5432, "transaction").await;
    let env = Env::new().await;
    // The schema is there already (the worker migrated it, connected directly).
    env.store().migrate().await.unwrap();
    let url = bouncer.url(&env.db.name);
    let env = env.set("database_url", &url);
    let export = Export::new(&env, "plain", lines(&[student(1), student(2)]));
    let out = env
        .command_within(&["import", export.path(), "--as-of", T], LIMIT)
        .await;
    let direct = sqlx::PgPool::connect(&env.db.url()).await.unwrap();
    let outside: Vec<String> = sqlx::query_scalar(
        "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname = 'public'",
    )
    .fetch_all(&direct)
    .await
    .unwrap();
    assert_eq!(
        outside,
        Vec::<String>::new(),
        "written outside DATABASE_SCHEMA"
    );
    assert_eq!(out.code, 2, "{}", out.text());
    assert!(out.stderr.contains("pool_mode = session"), "{}", out.stderr);
}
