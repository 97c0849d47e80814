//! `import --full --as-of T`: a full export repairs drift of every kind, never undoes an
//! event newer than the export, and converges with replicas consuming meanwhile.

use super::*;
use crate::support::*;
use std::time::Duration;

/// A full export repairs drift of each kind (a lost reactivation, creation or revocation,
/// users left out, staff included) while events newer than the export stand; a rerun
/// changes nothing and the export's id table is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_of_each_kind_is_repaired_and_newer_events_stand() {
    let env = Env::new().await;
    let store = env.store();
    let worker = env.start().await;
    let p = env.publisher().await;
    for n in [1, 2, 3, 4, 5, 7] {
        p.send("user.created", n, BEFORE, "student", &["lms"]).await;
    }
    p.send("user.created", 9, BEFORE, "teacher", &[]).await;
    // 3 was deleted, but the export (taken later) has them: a lost reactivation.
    p.delete(3, "2024-02-01T00:00:00Z").await;
    // After the export: 7 deleted, 8 created.
    p.delete(7, AFTER).await;
    p.send("user.created", 8, AFTER, "student", &["lms"]).await;
    drained(&store, 10).await;
    worker.stop().await;

    let mut renamed = student(2);
    renamed["last_name"] = "Renamed".into();
    let export = Export::new(
        &env,
        "full",
        lines(&[
            student(1),
            renamed,
            student(3),
            // 4 and 9 are left out; 5 is no longer for this service; 6 is new.
            record(5, "student", &["sat"]),
            student(6),
            student(7),
        ]),
    );
    let out = full(&env, &export, T, &["--json"]).await.ok();
    let s = out.json();
    assert_eq!(s["would_deactivate"], 3, "{s}");
    assert_eq!(s["outcomes"]["created"], 1, "{s}");
    assert_eq!(s["outcomes"]["reactivated"], 1, "{s}");
    assert_eq!(s["outcomes"]["deactivated"], 1, "{s}");
    // 7's deletion after T stands; the record's fields are newer than the row's.
    assert_eq!(s["outcomes"]["backfilled"], 1, "{s}");
    assert_eq!(s["reconcile"]["absent"]["deactivated"], 2, "{s}");

    let state = |n: u8| {
        let store = &store;
        async move { row(store, n).await.map(|(a, r, _)| (a, r)) }
    };
    let active = Some((true, None));
    let gone = |why: &str| Some((false, Some(why.to_string())));
    assert_eq!(state(1).await, active);
    assert_eq!(state(2).await, active);
    assert_eq!(state(3).await, active, "reactivated");
    assert_eq!(state(4).await, gone("absent_from_export"));
    assert_eq!(state(5).await, gone("access_revoked"));
    assert_eq!(state(6).await, active, "created");
    assert_eq!(state(7).await, gone("deleted"), "a deletion after T stands");
    assert_eq!(state(8).await, active, "a user created after T stays");
    assert_eq!(state(9).await, gone("absent_from_export"), "staff too");
    let name: String = sqlx::query_scalar("SELECT last_name FROM users WHERE auth_user_id = $1")
        .bind(uid(2))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(name, "Renamed");

    // The reconcile's decision reads like an event's.
    let why = env.command(&["explain", &uid(4).to_string()]).ok().stdout;
    assert!(why.contains("reconcile"), "{why}");
    assert!(why.contains("absent from a full export"), "{why}");

    let before = table(&store).await;
    let again = full(&env, &export, T, &[]).await.ok();
    assert!(again.stdout.contains("changed: 0\n"), "{}", again.stdout);
    assert_eq!(table(&store).await, before, "a rerun changes nothing");
    let tables = count(
        &store,
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'export_ids_%'",
    )
    .await;
    assert_eq!(tables, 0, "the export's id table is dropped");
}

/// A reconcile that would pass the brake refuses without `--yes`, an empty or wholly invalid
/// export refuses whatever the flags, and a dry run lists the ids it would change: a broken
/// export must not deactivate everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brake_and_an_empty_export_refuse_and_a_dry_run_lists_the_diff() {
    let env = Env::new().await.set("deactivation_brake", "2");
    let store = env.store();
    let everyone: Vec<Value> = (1..=5).map(student).collect();
    let setup = Export::new(&env, "setup", lines(&everyone));
    env.command(&["import", setup.path(), "--as-of", BEFORE])
        .ok();
    assert_eq!(
        count(&store, "SELECT count(*) FROM users WHERE is_active").await,
        5
    );

    let mut renamed = student(1);
    renamed["last_name"] = "Renamed".into();
    let one = Export::new(&env, "one", lines(&[renamed, student(6)]));
    let dry = full(&env, &one, T, &["--dry-run", "--json"]).await.ok();
    let s = dry.json();
    let ids = |kind: &str| -> Vec<String> {
        let list = s["ids"][kind].as_array().cloned().unwrap_or_default();
        list.iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let mut left_out: Vec<String> = (2..=5).map(|n| uid(n).to_string()).collect();
    left_out.sort();
    assert_eq!(ids("deactivated"), left_out, "{s}");
    assert_eq!(ids("created"), [uid(6).to_string()], "{s}");
    assert_eq!(ids("updated"), [uid(1).to_string()], "{s}");
    assert_eq!(s["needs_yes"], true, "{s}");
    let text = full(&env, &one, T, &["--dry-run"]).await.ok().stdout;
    assert!(text.contains("needs --yes"), "{text}");
    assert!(text.contains("dry run: nothing was written"), "{text}");
    assert_eq!(
        count(&store, "SELECT count(*) FROM users WHERE is_active").await,
        5
    );

    let refused = full(&env, &one, T, &[]).await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("DEACTIVATION_BRAKE"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        count(&store, "SELECT count(*) FROM users WHERE is_active").await,
        5
    );
    assert_eq!(
        count(&store, "SELECT count(*) FROM users").await,
        5,
        "nothing created"
    );

    let confirmed = full(&env, &one, T, &["--yes"]).await.ok();
    assert!(
        confirmed.stdout.contains("deactivated: 4"),
        "{}",
        confirmed.stdout
    );
    assert_eq!(
        count(&store, "SELECT count(*) FROM users WHERE is_active").await,
        2
    );

    for (name, text) in [("empty", ""), ("invalid", "{\"id\": 5}\nnot json\n")] {
        let empty = Export::new(&env, name, text);
        let refused = full(&env, &empty, T, &["--yes"]).await;
        assert_eq!(refused.code, 1, "{name}: {}", refused.stderr);
        assert!(
            refused.stderr.contains("no valid record"),
            "{}",
            refused.stderr
        );
    }
    assert_eq!(
        count(&store, "SELECT count(*) FROM users WHERE is_active").await,
        2
    );

    // Usage: --full needs --as-of.
    let no_time = env.command(&["import", one.path(), "--full"]);
    assert_eq!(no_time.code, 2, "{}", no_time.stderr);
}

/// The events of the reconcile tests below: before `T` (the export reflects them, but for
/// the lost deletions of 31-35), and after it.
fn history() -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let mut before = Vec::new();
    for n in 1..=35 {
        before.push(event("user.created", n, BEFORE, "student", &["lms"]));
    }
    // In the export: 1-30. 31-35 were deleted upstream, their events lost.
    let export = (1..=30).map(student).collect();
    let mut after = Vec::new();
    for n in 1..=5 {
        after.push(event("user.deleted", n, AFTER, "student", &["lms"]));
    }
    for n in 6..=10 {
        let mut e = event("user.updated", n, AFTER, "student", &["lms"]);
        e["user"]["last_name"] = "Later".into();
        after.push(e);
    }
    for n in 41..=45 {
        after.push(event("user.created", n, AFTER, "student", &["lms"]));
    }
    // Redeliveries of older events, interleaved.
    after.extend(before.iter().step_by(3).cloned());
    (before, export, after)
}

/// Two replicas consuming while the reconcile runs end with the table of the reconcile
/// followed by the events. Small batches, so that the two interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_consuming_during_a_reconcile_converge_to_reconcile_then_consume() {
    let (before, export, after) = history();
    let mut tables = Vec::new();
    for concurrent in [false, true] {
        let env = Env::new().await.set("batch_size", "5");
        let store = env.store();
        let p = env.publisher().await;
        let first = env.start().await;
        for e in &before {
            p.publish_json(e).await;
        }
        drained(&store, 35).await;
        let file = Export::new(&env, "full", lines(&export));
        let args = ["import", file.path(), "--full", "--as-of", T];
        if concurrent {
            let second = env.start().await;
            let publishing = async {
                for e in &after {
                    p.publish_json(e).await;
                }
            };
            let reconciling = env.command_within(&args, Duration::from_secs(60));
            let (_, out) = tokio::join!(publishing, reconciling);
            assert_eq!(out.code, 0, "{}", out.stderr);
            drained(&store, (before.len() + after.len()) as i64).await;
            second.stop().await;
        } else {
            first.stop().await;
            env.command(&args).ok();
            let first = env.start().await;
            for e in &after {
                p.publish_json(e).await;
            }
            drained(&store, (before.len() + after.len()) as i64).await;
            first.stop().await;
            tables.push(table(&store).await);
            continue;
        }
        first.stop().await;
        tables.push(table(&store).await);
    }
    assert_eq!(tables[0].len(), 40);
    let inactive = tables[0].iter().filter(|r| !r.1).count();
    assert_eq!(inactive, 10, "1-5 deleted, 31-35 absent: {:?}", tables[0]);
    assert_eq!(tables[1], tables[0]);
}

/// A plain import reads once and checks each batch against the brake: a batch that would
/// pass it stops the import (exit 1; the batches before stay applied), a dry run says
/// `--yes` would be needed, and `--yes` applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_import_stops_at_the_brake_and_applies_with_yes() {
    let env = Env::new()
        .await
        .set("deactivation_brake", "3")
        .set("batch_size", "2");
    let store = env.store();
    let everyone: Vec<Value> = (1..=6).map(student).collect();
    let setup = Export::new(&env, "setup", lines(&everyone));
    env.command(&["import", setup.path(), "--as-of", BEFORE])
        .ok();
    let mut revoked: Vec<Value> = (1..=6).map(|n| record(n, "student", &["sat"])).collect();
    revoked.insert(0, student(7));
    let file = Export::new(&env, "revoked", lines(&revoked));
    let args = ["import", file.path(), "--as-of", T];

    let dry = env
        .command(&[&args[..], &["--dry-run", "--json"]].concat())
        .ok();
    assert_eq!(dry.json()["would_deactivate"], 6, "{}", dry.stdout);
    assert_eq!(dry.json()["needs_yes"], true, "{}", dry.stdout);

    let stopped = env.command(&args);
    assert_eq!(stopped.code, 1, "{}", stopped.text());
    assert!(stopped.stderr.contains("--yes"), "{}", stopped.stderr);
    // Batches of two: 7 and 1 (one deactivation), 2 and 3 (two: the window is full), then
    // 4 and 5 would pass it.
    let active = count(&store, "SELECT count(*) FROM users WHERE is_active").await;
    assert_eq!(
        active, 4,
        "user 7 created, users 1-3 deactivated, then it stopped"
    );
    assert!(stopped.stderr.contains("line 5"), "{}", stopped.stderr);

    env.command(&[&args[..], &["--yes"]].concat()).ok();
    let active = count(&store, "SELECT count(*) FROM users WHERE is_active").await;
    assert_eq!(active, 1, "only user 7 is left active");
}
