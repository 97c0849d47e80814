//! Each framework's table through a user's whole lifecycle. Each table is written as the
//! framework's own migrations create it on PostgreSQL, plus the key column and unique
//! index that `user-sync migrate --print-target-sql` prints. Each holds a user the backend
//! had before the sync (no auth id, the email in another case: adopted, not duplicated),
//! a backend user the sync never hears of, and a column only the backend writes (it must
//! survive every event).

use super::*;
use crate::support::*;
use std::time::Duration;

/// The lifecycle of user 1 (created, updated, revoked, updated while revoked, re-granted,
/// deleted), checking after each step that the legacy row was adopted and is the only
/// one, that the backend's column and its other user are untouched and the password is
/// stored as the framework keeps it. Returns `extra` after each step.
async fn lifecycle(fw: &Framework) -> Vec<Option<String>> {
    let env = Env::new().await;
    let mapping = fw.create(&env).await;
    let db = &backend(&env).await;
    let legacy_id: Option<String> = sqlx::query_scalar(&format!(
        "SELECT ({})::text FROM {} WHERE {} = '{LEGACY_EMAIL}'",
        fw.id, fw.table, fw.email
    ))
    .fetch_one(db)
    .await
    .unwrap();
    let root = format!("{} = 'root@localhost'", fw.email);
    let root_before = fw.count(db, &root).await;
    let worker = fw.start(&env, mapping).await;
    let p = env.publisher().await;
    let hash = password_hash();
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
        let user1 = format!("lower({}) = 'user1@example.com'", fw.email);
        assert_eq!(fw.count(db, &user1).await, 1, "{what}: not duplicated");
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
            fw.count(db, &format!("{root} AND auth_user_id IS NULL"))
                .await,
            root_before,
            "{what}: the backend's own user untouched"
        );
        assert_eq!(fw.count(db, "true").await, 2, "{what}");
        logs_in_while_active(fw, db, active_after, &what).await;
        extras.push(row.extra);
    }
    let stored = fw.row(db, 1).await.unwrap().password.unwrap();
    verify_password(&stored, fw.prefix);
    worker.stop().await;
    extras
}

/// User 1 logs in through the framework's own lookup and check while active (with its
/// password only), and not otherwise.
async fn logs_in_while_active(fw: &Framework, db: &PgPool, active: bool, what: &str) {
    let login = "user1@example.com";
    let outcome = fw.log_in(db, login, PASSWORD).await;
    if active {
        assert_eq!(outcome, Outcome::In(Some(uid(1))), "{what}: logs in");
        let wrong = fw.log_in(db, login, "wrong").await;
        assert_eq!(wrong, Outcome::WrongPassword, "{what}");
    } else {
        assert!(
            matches!(outcome, Outcome::Inactive | Outcome::NoUser),
            "{what}: cannot log in: {outcome:?}"
        );
    }
}

/// The stored password is the auth system's hash, as the bcrypt crate reads it (after
/// any prefix); the frameworks' own checks ran in `logs_in_while_active`.
fn verify_password(stored: &str, prefix: &str) {
    let hash = stored
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{stored} starts with {prefix:?}"));
    assert!(bcrypt::verify(PASSWORD, hash).unwrap());
    assert!(!bcrypt::verify("wrong", hash).unwrap());
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

/// Spring Security's `users`: the hash behind `{bcrypt}` as `$2a$` (the one variant
/// jBCrypt reads), `enabled` following the user, and the legacy row's authorities
/// following its username (now the auth system's email) through the cascading key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spring_security_users_follow_a_users_lifecycle() {
    let enabled = lifecycle(&SPRING).await;
    let expected = ["true", "true", "false", "false", "true", "false"];
    assert_eq!(enabled, expected.map(|e| Some(e.to_string())).to_vec());
}

/// ASP.NET Identity's `AspNetUsers`: `LockoutEnd` gets the far future on each
/// deactivation (Identity locks out only while it is ahead) and is cleared on
/// reactivation; the legacy row keeps its `Id`, two-factor setting, failed-login count
/// and security stamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aspnet_identity_users_follow_a_users_lifecycle_through_lockout_end() {
    let extras = lifecycle(&IDENTITY).await;
    let id = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";
    let locked = format!("{id}/9999-12-31 23:59:59");
    let open = format!("{id}/");
    let expected = [&open, &open, &locked, &locked, &open, &locked];
    assert_eq!(extras, expected.map(|e| Some(e.clone())).to_vec());
}
