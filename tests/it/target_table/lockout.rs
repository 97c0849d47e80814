//! ASP.NET Identity's `LockoutEnd` as the deactivation timestamp, with `timestamp_value`:
//! the sync's lockout is the far future; any other is Identity's own (after failed
//! logins) and stays the backend's.

use super::*;
use crate::support::*;
use user_sync::target_table::TargetTable;

/// User 1's `LockoutEnd` as text (UTC), or None.
async fn lockout_end(db: &PgPool) -> Option<String> {
    sqlx::query_scalar(
        r#"SELECT to_char("LockoutEnd" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
           FROM "AspNetUsers" WHERE auth_user_id = $1"#,
    )
    .bind(uid(1))
    .fetch_one(db)
    .await
    .unwrap()
}

/// Identity's table (its mapping changed by `adjust`), a worker on it and user 1 created
/// there; the backend pool and the publisher.
async fn identity_with_user_1(
    adjust: impl FnOnce(&mut TargetTable),
) -> (Env, PgPool, Publisher, Worker) {
    let env = Env::new().await;
    let mut mapping = IDENTITY.create_table(&env).await;
    adjust(&mut mapping);
    let worker = IDENTITY.start(&env, mapping).await;
    let db = backend(&env).await;
    let p = env.publisher().await;
    let created = event(
        "user.created",
        1,
        "2024-01-01T00:00:00Z",
        "student",
        &["lms"],
    );
    p.publish_json(&created).await;
    IDENTITY.wait_first_name(&db, 1, "Test").await;
    (env, db, p, worker)
}

/// Sets user 1's `LockoutEnd` to `until` (SQL) as Identity itself would.
async fn lock_out(db: &PgPool, until: &str) {
    let sql = format!(
        r#"UPDATE "AspNetUsers" SET "LockoutEnd" = {until} WHERE auth_user_id = '{}'"#,
        uid(1)
    );
    run_sql(db, &sql).await;
}

/// An update that renames user 1 `Later`, waited for.
async fn rename_user_1(db: &PgPool, p: &Publisher) {
    let mut update = event(
        "user.updated",
        1,
        "2024-01-02T00:00:00Z",
        "student",
        &["lms"],
    );
    update["user"]["first_name"] = "Later".into();
    p.publish_json(&update).await;
    IDENTITY.wait_first_name(db, 1, "Later").await;
}

/// Identity locked user 1 out for a few minutes: an update leaves that lockout alone
/// (Identity's sign-in still refuses the user); the user still counts as active, so another user's claim of its email is an email
/// conflict (no tombstone); a deletion locks it out for good, and a reactivation lifts
/// only the sync's lockout (the user signs in again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identitys_own_lockout_stays_and_counts_as_active() {
    let (env, db, p, worker) = identity_with_user_1(|mapping| {
        mapping.free_email = Some("deleted+{auth_id}@invalid".into());
    })
    .await;
    let db = &db;
    lock_out(db, "now() + interval '5 minutes'").await;
    let identitys = lockout_end(db).await.expect("locked by Identity");

    rename_user_1(db, &p).await;
    assert_eq!(lockout_end(db).await, Some(identitys.clone()), "left alone");
    let row = IDENTITY.row(db, 1).await.unwrap();
    assert!(row.active, "Identity's lockout is no deactivation");
    let locked = IDENTITY.log_in(db, "user1@example.com", PASSWORD).await;
    assert_eq!(
        locked,
        Outcome::Inactive,
        "but Identity's sign-in refuses it"
    );

    let mut claim = event(
        "user.created",
        2,
        "2024-01-03T00:00:00Z",
        "student",
        &["lms"],
    );
    claim["user"]["email"] = "user1@example.com".into();
    p.publish_json(&claim).await;
    env.wait_dead_letters(1, "user 2's claim", WAIT).await;
    let letters = env.dead_letters().await;
    assert_eq!(
        header(&letters[0], "x-error-kind").as_deref(),
        Some("email_conflict")
    );
    let row = IDENTITY.row(db, 1).await.unwrap();
    assert_eq!(row.email.as_deref(), Some("user1@example.com"), "not freed");

    p.publish_json(&event(
        "user.deleted",
        1,
        "2024-01-04T00:00:00Z",
        "student",
        &[],
    ))
    .await;
    let forever = Some("9999-12-31 23:59:59.000000".to_string());
    wait_for("locked out for good", WAIT, || async {
        lockout_end(db).await == forever
    })
    .await;
    let mut back = event(
        "user.updated",
        1,
        "2024-01-05T00:00:00Z",
        "student",
        &["lms"],
    );
    back["user"]["password_hash"] = password_hash().into();
    p.publish_json(&back).await;
    wait_for("the sync's lockout lifted", WAIT, || async {
        lockout_end(db).await.is_none()
    })
    .await;
    let back = IDENTITY.log_in(db, "USER1@example.com", PASSWORD).await;
    assert_eq!(
        back,
        Outcome::In(Some(uid(1))),
        "signs in again, in any case"
    );
    worker.stop().await;
}

/// An administrator's permanent lockout (Identity's `DateTimeOffset.MaxValue`, which Npgsql
/// stores as `infinity`) is the backend's, not the sync's: an ordinary update of an active
/// user leaves it in place instead of lifting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrators_permanent_lockout_survives_an_update() {
    let (_env, db, p, worker) = identity_with_user_1(|_| {}).await;
    let db = &db;
    lock_out(db, "'infinity'").await;

    rename_user_1(db, &p).await;
    let still: Option<bool> = sqlx::query_scalar(
        r#"SELECT "LockoutEnd" = 'infinity' FROM "AspNetUsers" WHERE auth_user_id = $1"#,
    )
    .bind(uid(1))
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(still, Some(true), "the administrator's lockout stays");
    worker.stop().await;
}
