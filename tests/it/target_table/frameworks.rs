//! Each framework's table through a user's whole lifecycle. Each table is written as the
//! framework's own migrations create it on PostgreSQL, plus the key column and unique
//! index that `user-sync migrate --print-target-sql` prints. Each holds a user the backend
//! had before the sync (no auth id, the email in another case: adopted, not duplicated),
//! a backend user the sync never hears of, and a column only the backend writes (it must
//! survive every event).

use super::*;
use crate::support::*;
use std::process::Command;
use std::time::Duration;

/// The password the auth system hashed (cost 4 below): what a user types at the backend.
const PASSWORD: &str = "correct horse battery staple";

/// The lifecycle of user 1 (created, updated, revoked, updated while revoked, re-granted,
/// deleted), checking after each step that the legacy row was adopted and is the only
/// one, that the backend's column and its other user are untouched and the password is
/// stored as the framework keeps it. Returns `extra` after each step.
async fn lifecycle(fw: &Framework) -> Vec<Option<String>> {
    let env = Env::new().await;
    let mapping = fw.create(&env).await;
    let db = &backend(&env).await;
    let legacy_id: i64 = scalar(
        db,
        &format!(
            "SELECT id::int8 FROM {} WHERE email = '{LEGACY_EMAIL}'",
            fw.table
        ),
    )
    .await;
    let root_before = fw.count(db, "email = 'root@localhost'").await;
    let worker = fw.start(&env, mapping).await;
    let p = env.publisher().await;
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    type Step<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a [&'a str],
        &'a str,
        bool,
        bool,
    );
    // (kind, ts, role, services, first name, is_active in the event, active after)
    let steps: [Step; 6] = [
        (
            "user.created",
            "2024-01-01T00:00:00Z",
            "admin",
            &["lms"],
            "Ada",
            true,
            true,
        ),
        (
            "user.updated",
            "2024-01-02T00:00:00Z",
            "student",
            &["lms"],
            "Adele",
            true,
            true,
        ),
        // Access removed: a deactivation, the fields stay.
        (
            "user.updated",
            "2024-01-03T00:00:00Z",
            "student",
            &["sat"],
            "Ignored",
            true,
            false,
        ),
        // Back in the service but inactive upstream: fields written, still deactivated.
        (
            "user.updated",
            "2024-01-04T00:00:00Z",
            "student",
            &["lms"],
            "Adeline",
            false,
            false,
        ),
        (
            "user.updated",
            "2024-01-05T00:00:00Z",
            "student",
            &["sat", "lms"],
            "Adeline",
            true,
            true,
        ),
        (
            "user.deleted",
            "2024-01-06T00:00:00Z",
            "student",
            &[],
            "Adeline",
            true,
            false,
        ),
    ];
    let mut extras = Vec::new();
    let mut expected_first = "";
    for (i, (kind, ts, role, services, first, active_in, active_after)) in
        steps.into_iter().enumerate()
    {
        if i == 3 {
            // Laravel keeps whole seconds: a later write would show a later time.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let e = event_for(kind, 1, ts, role, services, (first, active_in, &hash));
        p.publish_json(&e).await;
        if active_after || kind == "user.updated" && services.contains(&"lms") {
            expected_first = first;
        }
        let what = format!("step {i}: {kind} at {ts}");
        wait_for(&what, WAIT, || async {
            fw.row(db, 1).await.is_some_and(|r| {
                r.active == active_after && r.first_name.as_deref() == Some(expected_first)
            })
        })
        .await;
        let row = fw.row(db, 1).await.unwrap();
        assert_eq!(row.id, legacy_id, "{what}: the legacy row adopted");
        assert_eq!(
            fw.count(db, "lower(email) = 'user1@example.com'").await,
            1,
            "{what}: not duplicated"
        );
        assert_eq!(row.email.as_deref(), Some("user1@example.com"), "{what}");
        assert_eq!(
            row.backend.as_deref(),
            Some(fw.backend.1),
            "{what}: the backend's column survives"
        );
        assert_eq!(
            row.password,
            Some(format!("{}{}", fw.prefix, fw.stored_hash(&hash))),
            "{what}: the hash as the framework stores it"
        );
        assert_eq!(
            fw.count(db, "email = 'root@localhost' AND auth_user_id IS NULL")
                .await,
            root_before,
            "{what}: the backend's own user untouched"
        );
        assert_eq!(fw.count(db, "true").await, 2, "{what}");
        extras.push(row.extra);
    }
    let stored = fw.row(db, 1).await.unwrap().password.unwrap();
    verify_password(&stored, fw.prefix);
    worker.stop().await;
    extras
}

/// The stored password verifies as the framework verifies it: with the Rust `bcrypt`
/// crate always, and with Python's `bcrypt` module (Django's own check for `bcrypt$`)
/// when it can be imported.
fn verify_password(stored: &str, prefix: &str) {
    let hash = stored
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{stored} starts with {prefix:?}"));
    assert!(bcrypt::verify(PASSWORD, hash).unwrap());
    assert!(!bcrypt::verify("wrong", hash).unwrap());
    if !python_bcrypt() {
        println!("note: Python's bcrypt module is not importable; Python check skipped");
        return;
    }
    assert_eq!(python_check(PASSWORD, stored, prefix), "ok");
    assert_eq!(python_check("wrong", stored, prefix), "mismatch");
}

fn python_bcrypt() -> bool {
    Command::new("python3")
        .args(["-c", "import bcrypt"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Django's `BCryptPasswordHasher.verify` for a `bcrypt$` value, `bcrypt.checkpw` (what
/// Devise's and PHP's bcrypt do) otherwise.
fn python_check(password: &str, stored: &str, prefix: &str) -> String {
    const SCRIPT: &str = r#"
import sys, hmac, bcrypt
password, encoded, prefix = sys.argv[1].encode(), sys.argv[2], sys.argv[3]
if prefix:
    algorithm, data = encoded.split("$", 1)
    assert algorithm == "bcrypt", algorithm
    ok = hmac.compare_digest(bcrypt.hashpw(password, data.encode("ascii")), data.encode("ascii"))
else:
    ok = bcrypt.checkpw(password, encoded.encode("ascii"))
print("ok" if ok else "mismatch")
"#;
    let out = run(Command::new("python3").args(["-c", SCRIPT, password, stored, prefix])).ok();
    out.stdout.trim().to_string()
}

/// Django's `auth_user` (a flag, no reason column): `is_staff` and `is_superuser` follow
/// the role map, `date_joined` keeps the legacy row's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_auth_user_adopts_and_follows_a_users_lifecycle() {
    let extras = lifecycle(&DJANGO).await;
    // is_staff / is_superuser from the role map; date_joined is the legacy row's.
    let staff = ["true/true", "false/false", "false/false"];
    let expected: Vec<String> = [0, 1, 1, 1, 1, 1]
        .iter()
        .map(|&i| format!("{}/2020-01-01", staff[i]))
        .collect();
    assert_eq!(extras, expected.into_iter().map(Some).collect::<Vec<_>>());
}

/// Laravel's `users` with soft deletes: `deleted_at` is set on deactivation, kept while
/// the row stays deactivated, cleared on reactivation and set anew on the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laravel_users_follow_a_users_lifecycle_through_soft_deletes() {
    let deleted_at = lifecycle(&LARAVEL).await;
    assert_eq!(deleted_at[0], None);
    assert_eq!(deleted_at[1], None);
    let first = deleted_at[2].clone().expect("deleted_at set on revocation");
    assert_eq!(
        deleted_at[3].as_deref(),
        Some(first.as_str()),
        "a deactivated row keeps its first deactivation time"
    );
    assert_eq!(deleted_at[4], None, "cleared on reactivation");
    let again = deleted_at[5].clone().expect("deleted_at set on deletion");
    assert!(
        again > first,
        "a new deactivation, a new time: {again} > {first}"
    );
}

/// Rails/Devise's `users` with an active flag and a reason column: the reason follows each
/// deactivation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devise_users_follow_a_users_lifecycle_with_a_reason_column() {
    let reasons = lifecycle(&DEVISE).await;
    let expected = [
        None,
        None,
        Some("access_revoked"),
        Some("inactive_upstream"),
        None,
        Some("deleted"),
    ];
    assert_eq!(
        reasons,
        expected.map(|r| r.map(String::from)).to_vec(),
        "deactivation_reason"
    );
}
