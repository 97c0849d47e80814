//! What a reconcile makes of each record and of each user it leaves out: who counts as in
//! the export, in what order a left-out user's deactivation and the records apply, and how
//! the export's time ranks against the events.

use super::*;
use crate::support::*;

/// A user the export lists with an invalid record (a hash format the decoder does not
/// know, a field too long, a bad timestamp) is reported and skipped, not deactivated as
/// left out: a record whose `id` is a valid UUID says who is in the export, whatever else
/// is wrong with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_record_of_a_listed_user_keeps_them_from_being_left_out() {
    let env = Env::new().await;
    let store = env.store();
    seed(&env, [1, 2]).await;

    let mut unreadable = student(2);
    unreadable["password_hash"] = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA".into();
    let export = Export::new(&env, "full", lines(&[student(1), unreadable]));
    let out = full(&env, &export, T, &["--json"]).await;
    assert_eq!(out.code, 3, "one record rejected: {}", out.text());
    assert_eq!(
        row(&store, 2).await.map(|r| (r.0, r.1)),
        Some((true, None)),
        "user 2 is in the export (its record was skipped as invalid), yet the reconcile \
         deactivated them as left out: {}",
        out.stdout
    );
}

/// The case the reconcile exists for: user 1 was deleted upstream (the event lost) and a
/// new account, user 2, registered with the same email; the export lists user 2 only. One
/// run deactivates user 1 as left out before it applies the records, so user 2 is created,
/// not refused as an email conflict that only a second run would resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_frees_the_email_of_a_left_out_user_before_applying_the_records() {
    let env = Env::new().await;
    let store = env.store();
    seed(&env, [1]).await;

    let mut newcomer = student(2);
    newcomer["email"] = "user1@example.com".into();
    let export = Export::new(&env, "full", lines(&[newcomer]));
    let out = full(&env, &export, T, &["--json"]).await;
    assert_eq!(
        row(&store, 1).await.map(|r| (r.0, r.1)),
        Some((false, Some("absent_from_export".into())))
    );
    assert_eq!(
        row(&store, 2).await.map(|r| r.0),
        Some(true),
        "the export's only user should be active after the reconcile: {}",
        out.text()
    );
    assert_eq!(out.code, 0, "{}", out.text());
}

/// A left-out user whose deactivation the database refuses (a backend trigger) stays
/// active and is reported by auth id (exit 3), not as an invalid record on a "line 0" that
/// no export has: the operator must see whom the reconcile failed to deactivate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_left_out_user_the_database_refuses_is_reported_by_auth_id() {
    let env = Env::new().await;
    let store = env.store();
    seed(&env, [1]).await;
    let mut guarded = student(2);
    guarded["first_name"] = "Refused".into();
    let file = Export::new(&env, "seed2", lines(&[guarded]));
    env.command_within(&["import", file.path(), "--as-of", BEFORE], LIMIT)
        .await
        .ok();
    refusing_trigger(&store).await;

    let export = Export::new(&env, "full", lines(&[student(1)]));
    let out = full(&env, &export, T, &[]).await;
    assert_eq!(out.code, 3, "{}", out.text());
    assert_eq!(row(&store, 2).await.map(|r| r.0), Some(true));
    assert!(
        out.stdout.contains(&uid(2).to_string()),
        "the report should name the user left active: {}",
        out.stdout
    );
    assert!(!out.stdout.contains("line 0"), "{}", out.stdout);
}

/// A user wrongly deactivated as left out (an export that missed them) is restored by a
/// later full export that lists them, even when their record carries its own timestamp,
/// older than the first reconcile: presence in a full export is a fact as of `--as-of`, so
/// the status a record gives stands at that time, while its fields keep their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_full_export_with_older_record_timestamps_restores_a_left_out_user() {
    let env = Env::new().await;
    let store = env.store();
    seed(&env, [1, 2]).await;
    let partial = Export::new(&env, "partial", lines(&[student(1)]));
    full(&env, &partial, T, &[]).await.ok();
    assert_eq!(
        row(&store, 2).await.map(|r| (r.0, r.1)),
        Some((false, Some("absent_from_export".into())))
    );

    let dated = |n: u8| {
        let mut r = student(n);
        r["timestamp"] = BEFORE.into();
        r
    };
    let complete = Export::new(&env, "complete", lines(&[dated(1), dated(2)]));
    let out = full(&env, &complete, AFTER, &["--json"]).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert_eq!(
        row(&store, 2).await.map(|r| (r.0, r.1)),
        Some((true, None)),
        "the full export as of {AFTER} lists user 2: {}",
        out.stdout
    );
}

/// A periodic reconcile does not report the users it revoked before as deactivated again:
/// they are unchanged, left out of "would change" and of a dry run's ids. Otherwise the
/// diff an operator reads before applying is noise that hides the real deactivations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_reconcile_reports_already_revoked_users_as_unchanged() {
    let env = Env::new().await;
    let store = env.store();
    seed(&env, [1, 2]).await;
    let moved = record(2, "student", &["sat"]);
    let export = Export::new(&env, "full", lines(&[student(1), moved]));
    let first = full(&env, &export, T, &["--json"]).await.ok();
    assert_eq!(
        first.json()["outcomes"]["deactivated"],
        1,
        "{}",
        first.stdout
    );
    assert_eq!(
        row(&store, 2).await.map(|r| (r.0, r.1)),
        Some((false, Some("access_revoked".into())))
    );

    // The next periodic export: nobody changed.
    let dry = full(&env, &export, AFTER, &["--dry-run", "--json"])
        .await
        .ok();
    let s = dry.json();
    assert_eq!(
        s["ids"]["deactivated"],
        Value::Null,
        "user 2 was revoked by the last reconcile; nothing changes: {s}"
    );
    let again = full(&env, &export, AFTER, &[]).await.ok();
    assert!(again.stdout.contains("changed: 0\n"), "{}", again.stdout);
}

/// `--as-of` before 2000 with sub-microsecond digits (`1999-12-31T23:59:59.0000005Z`) is
/// cut to the microsecond like every event, never rounded up: an update at `...59.000001`,
/// half a microsecond after the export, stands. (Bound as a parameter, a time before 2000
/// would be rounded toward 2000, that is up, and lose the tie to the reconcile's
/// deactivation.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_microsecond_as_of_before_2000_never_undoes_an_event_after_it() {
    let env = Env::new().await;
    let store = env.store();
    let worker = env.start().await;
    let p = env.publisher().await;
    for n in [1, 2] {
        p.send(
            "user.created",
            n,
            "1999-01-01T00:00:00Z",
            "student",
            &["lms"],
        )
        .await;
    }
    let mut later = event(
        "user.updated",
        2,
        "1999-12-31T23:59:59.000001Z",
        "student",
        &["lms"],
    );
    later["user"]["last_name"] = "After the export".into();
    p.publish_json(&later).await;
    wait_for("the events applied", WAIT, || async {
        count(
            &store,
            "SELECT count(*) FROM users WHERE last_name = 'After the export'",
        )
        .await
            == 1
            && count(&store, "SELECT count(*) FROM users").await == 2
    })
    .await;
    worker.stop().await;

    let export = Export::new(&env, "full", lines(&[student(1)]));
    let out = full(&env, &export, "1999-12-31T23:59:59.0000005Z", &["--json"]).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert_eq!(
        row(&store, 2).await.map(|r| (r.0, r.1)),
        Some((true, None)),
        "user 2's update came 0.5 us after the export: {}",
        out.stdout
    );
}

/// `--as-of` with an offset and sub-microsecond digits (after 2000) is cut to the
/// microsecond like the events: an update one microsecond after the export stands, one at
/// the export's own microsecond does not (a deactivation outranks an update at equal time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_as_of_with_an_offset_and_nanoseconds_orders_like_the_events() {
    let env = Env::new().await;
    let store = env.store();
    let worker = env.start().await;
    let p = env.publisher().await;
    for n in 1..=3 {
        p.send("user.created", n, BEFORE, "student", &["lms"]).await;
    }
    p.update(2, "2024-06-01T00:00:00.000001Z").await;
    p.update(3, "2024-06-01T00:00:00Z").await;
    wait_for("the events decided", WAIT, || async {
        queue_trail_lines(&store).await == 5
    })
    .await;
    worker.stop().await;

    let export = Export::new(&env, "full", lines(&[student(1)]));
    let out = full(&env, &export, "2024-06-01T02:00:00.0000009+02:00", &[]).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert_eq!(row(&store, 2).await.map(|r| r.0), Some(true), "after T");
    assert_eq!(
        row(&store, 3).await.map(|r| (r.0, r.1)),
        Some((false, Some("absent_from_export".into()))),
        "at T"
    );
}
