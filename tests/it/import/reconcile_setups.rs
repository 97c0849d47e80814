//! The reconcile where it runs in production: on a backend's own table, through
//! PgBouncer, twice at once, and refusing an export it cannot read twice.

use super::*;
use crate::support::*;

/// The library's import of `text` under `settings`.
async fn import_as(
    env: &Env,
    settings: &user_sync::settings::Settings,
    text: &str,
    as_of: &str,
    full: bool,
) -> user_sync::ops::import::ImportSummary {
    use time::format_description::well_known::Rfc3339;
    let path = std::env::temp_dir().join(format!("{}-mapped.export", env.db.name));
    std::fs::write(&path, text).unwrap();
    let opts = user_sync::ops::import::ImportOptions {
        as_of: Some(time::OffsetDateTime::parse(as_of, &Rfc3339).unwrap()),
        batch_size: 2,
        full,
        ..Default::default()
    };
    let result = user_sync::ops::import::import(settings, &path, &opts, |_, _| {}).await;
    std::fs::remove_file(&path).unwrap();
    result.unwrap()
}

/// A reconcile on a backend's own table, with a reason column (Devise) and without
/// (Django): left-out and revoked users deactivated through the flag, the reason written
/// where there is a column for it, a newer identical record `unchanged` (judged on the
/// mapped columns), a rerun changing nothing. Pages of two users (BATCH_SIZE 2) cross
/// batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_converges_a_mapped_table_with_and_without_a_reason_column() {
    for (fw, table) in [(&DJANGO, "public.auth_user"), (&DEVISE, "public.users")] {
        let env = Env::new().await;
        let settings = fw.settings(&env, fw.create_table(&env).await);
        let db = backend(&env).await;
        let everyone: Vec<Value> = (1..=5).map(student).collect();
        let seeded = import_as(&env, &settings, &lines(&everyone), BEFORE, false).await;
        assert_eq!(seeded.outcomes["created"], 5, "{table}: {seeded:?}");

        let mut renamed = student(1);
        renamed["last_name"] = "Renamed".into();
        let export = lines(&[
            renamed,
            student(2),
            record(3, "student", &["sat"]),
            // 4 and 5 left out.
        ]);
        let s = import_as(&env, &settings, &export, T, true).await;
        assert_eq!(s.outcomes["updated"], 1, "{table}: {s:?}");
        assert_eq!(s.outcomes["unchanged"], 1, "{table}: {s:?}");
        assert_eq!(s.outcomes["deactivated"], 1, "{table}: {s:?}");
        let r = s.reconcile.as_ref().unwrap();
        assert_eq!(s.would_deactivate, Some(3), "{table}: {s:?}");
        assert_eq!(r.absent["deactivated"], 2, "{table}: {s:?}");
        let reason = |why: &str| fw.reason.map(|_| why.to_string());
        assert_eq!(fw.state(&db, 1).await, (true, None));
        assert_eq!(fw.state(&db, 3).await, (false, reason("access_revoked")));
        for n in [4, 5] {
            assert_eq!(
                fw.state(&db, n).await,
                (false, reason("absent_from_export")),
                "{table}"
            );
        }
        let again = import_as(&env, &settings, &export, T, true).await;
        assert_eq!(again.changed(), 0, "{table}: a rerun: {again:?}");
    }
}

/// A reconcile through PgBouncer in session mode (the pooling the README recommends): the
/// run's unlogged id table, its COPY and its set-based statements all go through the
/// pool's sessions, and the id table is dropped in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_through_pgbouncer_in_session_mode_deactivates_and_drops_its_id_table() {
    let bouncer = Bouncer::start(5432, "session").await;
    let env = Env::new().await;
    let direct = env.store();
    let url = bouncer.url(&env.db.name);
    let env = env.set("database_url", &url);
    seed(&env, 1..=4).await;
    let export = Export::new(&env, "full", lines(&[student(1), student(2)]));
    let out = full(&env, &export, T, &["--json"]).await.ok();
    assert_eq!(
        out.json()["reconcile"]["absent"]["deactivated"],
        2,
        "{}",
        out.stdout
    );
    assert_eq!(active(&direct).await, 2);
    let left = "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'export_ids_%'";
    assert_eq!(count(&direct, left).await, 0);
}

/// Two reconciles of one export at once (two operators, or a cron job overlapping a manual
/// run), in small pages so that they interleave: both succeed, each left-out user is
/// deactivated once (the other run finds them stale or inactive), the table is the one a
/// single run gives, and both id tables are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reconciles_at_once_converge_and_deactivate_each_user_once() {
    let env = Env::new().await.set("batch_size", "3");
    let store = env.store();
    seed(&env, 1..=40).await;
    let export = Export::new(
        &env,
        "full",
        lines(&(1..=20).map(student).collect::<Vec<_>>()),
    );
    let (a, b) = tokio::join!(
        full(&env, &export, T, &["--json"]),
        full(&env, &export, T, &["--json"])
    );
    let (a, b) = (a.ok().json(), b.ok().json());
    let absent = |s: &Value| {
        s["reconcile"]["absent"]["deactivated"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(absent(&a) + absent(&b), 20, "{a}\n{b}");
    assert_eq!(active(&store).await, 20);
    let gone = "SELECT count(*) FROM users WHERE deactivation_reason = 'absent_from_export'";
    assert_eq!(count(&store, gone).await, 20);
    let left = "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'export_ids_%'";
    assert_eq!(count(&store, left).await, 0);
}

/// `import --full` refuses an export it cannot read twice (a pipe: `auth-export |
/// user-sync import /dev/stdin --full`) and changes nothing. The reconcile reads the file
/// twice (who is in it, then the records): from a pipe the second read gets nothing, and
/// the users left out would be deactivated while none of the export's own changes were
/// made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_export_is_refused_by_a_reconcile() {
    use std::io::Write;
    let env = Env::new().await;
    let store = env.store();
    seed(&env, 1..=3).await;
    let mut inactive = student(2);
    inactive["is_active"] = false.into();
    let text = lines(&[student(1), inactive, student(4)]);
    let mut cmd = env.binary();
    cmd.args(["import", "/dev/stdin", "--full", "--as-of", T, "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A pipe cannot be read twice: `--full` refuses it and changes nothing.
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("not a pipe"), "{stderr}");
    for n in [1, 2, 3] {
        assert_eq!(
            row(&store, n).await.map(|r| r.0),
            Some(true),
            "{stdout}{stderr}"
        );
    }
    assert_eq!(row(&store, 4).await, None);
}
