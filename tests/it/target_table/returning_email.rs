//! A freed email comes back: a user deletes their account and signs up again with the same
//! email under a new auth id. On tables with a unique email (Laravel, Devise, Django's
//! username, Spring's username, Identity's normalized user name) the deactivated row
//! first gets a tombstone (`free_email`), then the new row takes the email; the old row
//! keeps its id, auth id and what refers to it, and each user logs in as the framework
//! lets them.

use super::*;
use crate::support::*;

const PATTERN: &str = "deleted+{auth_id}@invalid";
/// Spring's username is `varchar(50)`: a tombstone that fits.
const SHORT_PATTERN: &str = "{auth_id}@invalid";

fn pattern(fw: &Framework) -> &'static str {
    if fw.login == Login::Spring {
        SHORT_PATTERN
    } else {
        PATTERN
    }
}

fn tombstone(fw: &Framework, user: u8) -> String {
    pattern(fw).replace("{auth_id}", &uid(user).to_string())
}

/// A `kind` event of `user` carrying `email` and the hash of [`PASSWORD`].
fn with_email(kind: &str, user: u8, ts: &str, email: &str) -> serde_json::Value {
    let mut e = event(kind, user, ts, "student", &["lms"]);
    e["user"]["email"] = email.into();
    e["user"]["password_hash"] = password_hash().into();
    e
}

/// `fw`'s table created, with a table of the backend's referring to its rows (as Django's
/// `auth_user_groups` or Spring's `authorities` do), and a worker on it that frees a
/// deactivated row's email.
async fn start_freeing(fw: &Framework, env: &Env) -> Worker {
    let mut mapping = fw.create_table(env).await;
    let (t, pk) = (fw.table, fw.pk);
    run_sql(
        &backend(env).await,
        &format!(
            "CREATE TABLE public.enrollment AS SELECT {pk} AS user_ref FROM {t} WHERE false;
             ALTER TABLE public.enrollment ADD FOREIGN KEY (user_ref) REFERENCES {t} ({pk})
                 ON UPDATE CASCADE"
        ),
    )
    .await;
    mapping.free_email = Some(pattern(fw).into());
    fw.start(env, mapping).await
}

/// How many enrollments refer to `user`'s row.
async fn enrollments(fw: &Framework, db: &PgPool, user: u8) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM public.enrollment e JOIN {} x ON x.{} = e.user_ref \
         WHERE x.auth_user_id = $1",
        fw.table, fw.pk
    ))
    .bind(uid(user))
    .fetch_one(db)
    .await
    .unwrap()
}

/// Users 1, 2 and 3 sign up in turn with the same email (user 3 in another case), each
/// logging in with it, then deleted before the next (and no longer able to): each new row
/// is active with the email, each old one deactivated with its tombstone in every column
/// written from the email, its enrollment still its own, nothing dead-lettered.
async fn returns(fw: &Framework, email_columns: &[&str]) {
    let env = Env::new().await;
    let worker = start_freeing(fw, &env).await;
    let db = &backend(&env).await;
    let p = env.publisher().await;
    let signups: [(u8, &str); 3] = [
        (1, "user1@example.com"),
        (2, "user1@example.com"),
        (3, "USER1@Example.com"),
    ];
    let mut ids = Vec::new();
    for (day, (user, email)) in signups.into_iter().enumerate() {
        let created = format!("2024-01-{:02}T00:00:00Z", 2 * day + 1);
        p.publish_json(&with_email("user.created", user, &created, email))
            .await;
        let what = format!("user {user} signs up with {email}");
        wait_for(&what, WAIT, || async {
            fw.row(db, user)
                .await
                .is_some_and(|r| r.active && r.email.is_some_and(|e| e.eq_ignore_ascii_case(email)))
        })
        .await;
        let logged_in = fw.log_in(db, email, PASSWORD).await;
        assert_eq!(logged_in, Outcome::In(Some(uid(user))), "{what}: logs in");
        ids.push(fw.row(db, user).await.unwrap().id);
        if user > 1 {
            freed(fw, &env, user - 1, user, &ids[ids.len() - 2], email_columns).await;
        }
        run_sql(
            db,
            &format!(
                "INSERT INTO public.enrollment SELECT {} FROM {} WHERE auth_user_id = '{}'",
                fw.pk,
                fw.table,
                uid(user)
            ),
        )
        .await;
        let deleted = format!("2024-01-{:02}T00:00:00Z", 2 * day + 2);
        p.publish_json(&with_email("user.deleted", user, &deleted, email))
            .await;
        wait_for("deleted", WAIT, || async {
            fw.row(db, user).await.is_some_and(|r| !r.active)
        })
        .await;
        let outcome = fw.log_in(db, email, PASSWORD).await;
        assert!(
            matches!(outcome, Outcome::Inactive | Outcome::NoUser),
            "user {user} deleted cannot log in: {outcome:?}"
        );
    }
    assert_eq!(fw.count(db, "true").await, 3);
    assert_eq!(dlq_depth(&env).await, 0, "nothing dead-lettered");
    worker.stop().await;
}

/// User `old`'s row, after `new` took its email: deactivated, the same row (`id`, its
/// enrollment), its tombstone in each of `email_columns`, the freeing and the email it
/// held in its trail.
async fn freed(
    fw: &Framework,
    env: &Env,
    old: u8,
    new: u8,
    id: &Option<String>,
    email_columns: &[&str],
) {
    let db = &backend(env).await;
    let what = format!("user {new} took user {old}'s email");
    let row = fw.row(db, old).await.unwrap();
    assert!(!row.active, "{what}: user {old} stays deactivated");
    assert_eq!(&row.id, id, "{what}: user {old} keeps its row");
    assert_eq!(
        enrollments(fw, db, old).await,
        1,
        "{what}: and its enrollment"
    );
    for col in email_columns {
        let filter = format!("{col} = '{}' AND auth_user_id = $1", tombstone(fw, old));
        let n: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {} WHERE {filter}", fw.table))
                .bind(uid(old))
                .fetch_one(db)
                .await
                .unwrap();
        assert_eq!(n, 1, "{what}: user {old}'s {col} is its tombstone");
    }
    let trail = env.store().trail(uid(old), 10).await.unwrap();
    // The address it held (users 1 and 2 signed up in lower case) is kept in its trail.
    let freed = format!("email user1@example.com freed for auth user {}", uid(new));
    assert!(
        trail
            .iter()
            .any(|t| t.reason.as_deref() == Some(&freed) && t.changed == ["email"]),
        "{what}: {trail:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_frees_email_and_username() {
    returns(&DJANGO, &["email", "username"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laravel_frees_email() {
    returns(&LARAVEL, &["email"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devise_frees_email() {
    returns(&DEVISE, &["email"]).await;
}

/// The username is the primary key: `authorities` and the enrollment follow the
/// tombstone through their cascading foreign keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spring_security_frees_username() {
    returns(&SPRING, &["username"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aspnet_identity_frees_email_and_user_name() {
    returns(&IDENTITY, &[r#""Email""#, r#""UserName""#]).await;
}

/// After user 2 took user 1's freed email: an update of user 1 that leaves it deactivated
/// writes its fields and keeps the tombstone; its reactivation while user 2 holds the
/// email is an ordinary email conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_freed_user_keeps_its_tombstone_until_it_may_have_the_email_back() {
    let fw = &DEVISE;
    let env = Env::new().await;
    let worker = start_freeing(fw, &env).await;
    let db = &backend(&env).await;
    let p = env.publisher().await;
    let email = "user1@example.com";
    for (kind, user, ts) in [
        ("user.created", 1, "2024-01-01T00:00:00Z"),
        ("user.deleted", 1, "2024-01-02T00:00:00Z"),
        ("user.created", 2, "2024-01-03T00:00:00Z"),
    ] {
        p.publish_json(&with_email(kind, user, ts, email)).await;
    }
    wait_for("user 2 has the email", WAIT, || async {
        fw.row(db, 2)
            .await
            .is_some_and(|r| r.active && r.email.as_deref() == Some(email))
    })
    .await;
    let mut inactive = with_email("user.updated", 1, "2024-01-04T00:00:00Z", email);
    inactive["user"]["is_active"] = false.into();
    inactive["user"]["first_name"] = "Later".into();
    p.publish_json(&inactive).await;
    fw.wait_first_name(db, 1, "Later").await;
    let row = fw.row(db, 1).await.unwrap();
    assert!(!row.active);
    assert_eq!(row.email, Some(tombstone(fw, 1)), "the tombstone kept");
    assert_eq!(dlq_depth(&env).await, 0);

    p.publish_json(&with_email(
        "user.updated",
        1,
        "2024-01-05T00:00:00Z",
        email,
    ))
    .await;
    env.wait_dead_letters(1, "user 1's reactivation", WAIT)
        .await;
    let letters = env.dead_letters().await;
    assert_eq!(
        header(&letters[0], "x-error-kind").as_deref(),
        Some("email_conflict")
    );
    assert_eq!(fw.row(db, 1).await.unwrap().email, Some(tombstone(fw, 1)));
    worker.stop().await;
}
