//! A failure inside a batch takes no other event with it: an older event of the failing
//! user still lands, a row the database refuses is isolated, contention is retried at once.

use crate::helpers::*;
use std::time::Duration;
use user_sync::decide::{self, Planned};
use user_sync::pipeline::isolate_failures;
use user_sync::store::{Commit, EventResult, Store};

const WAIT: Duration = Duration::from_secs(30);

/// Applies `events` as one batch, the way the worker does.
async fn apply_batch(store: &Store, events: &[serde_json::Value]) -> Vec<(usize, EventResult)> {
    let planned: Vec<Planned> = events.iter().map(planned).collect();
    let (users, losers) = decide::reduce(&planned);
    let mut results = isolate_failures(store, &planned, &users, &losers, Commit::Yes, None)
        .await
        .unwrap();
    results.sort_by_key(|(i, _)| *i);
    results
}

async fn hash_of(store: &Store, user: u8) -> Option<String> {
    sqlx::query_scalar("SELECT password_hash FROM users WHERE auth_user_id = $1")
        .bind(uid(user))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// User 1 and user 2 active; user 2's email is what the failing update of user 1 wants.
async fn two_users(store: &Store) {
    store.migrate().await.unwrap();
    let created = [1, 2].map(|u| {
        event(
            "user.created",
            u,
            "2024-01-01T00:00:00Z",
            "student",
            &["lms"],
        )
    });
    apply_batch(store, &created).await;
}

fn taking_user2s_email(ts: &str) -> serde_json::Value {
    taking_email_of(1, 2, ts)
}

#[tokio::test]
async fn a_deletion_lands_when_a_newer_update_of_the_same_batch_fails() {
    let env = Env::new().await;
    let store = env.store();
    two_users(&store).await;
    let batch = [
        event(
            "user.deleted",
            1,
            "2024-01-02T00:00:00Z",
            "student",
            &["lms"],
        ),
        taking_user2s_email("2024-01-03T00:00:00Z"),
    ];
    let results = apply_batch(&store, &batch).await;
    assert_eq!(
        results,
        [
            (0, EventResult::Done(decide::Outcome::Deactivated)),
            (1, EventResult::EmailConflict)
        ]
    );
    let (active, reason, _) = row(&store, 1).await.unwrap();
    assert!(!active, "the deletion at t1 must stand");
    assert_eq!(reason.as_deref(), Some("deleted"));
}

#[tokio::test]
async fn a_password_change_lands_when_a_newer_update_of_the_same_batch_fails() {
    let env = Env::new().await;
    let store = env.store();
    two_users(&store).await;
    let new_hash = bcrypt::hash("new password", 4).unwrap();
    let mut change = event(
        "user.updated",
        1,
        "2024-01-02T00:00:00Z",
        "student",
        &["lms"],
    );
    change["user"]["password_hash"] = new_hash.clone().into();
    let results = apply_batch(
        &store,
        &[change, taking_user2s_email("2024-01-03T00:00:00Z")],
    )
    .await;
    assert_eq!(results[1].1, EventResult::EmailConflict);
    assert_eq!(hash_of(&store, 1).await.as_deref(), Some(new_hash.as_str()));
}

/// The same through the worker: the failing update is retried and dead-lettered, the
/// deletion before it is applied, not acknowledged as superseded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_worker_the_older_deletion_stands_and_the_newer_update_is_dead_lettered() {
    let env = Env::new().await.set("batch_max_wait_ms", "500");
    let store = env.store();
    two_users(&store).await;
    let p = env.publisher().await;
    // Queued before the worker starts, so both arrive in one batch.
    env.declare().await;
    p.send(
        "user.deleted",
        1,
        "2024-01-02T00:00:00Z",
        "student",
        &["lms"],
    )
    .await;
    p.publish_json(&taking_user2s_email("2024-01-03T00:00:00Z"))
        .await;
    let worker = env.start().await;
    env.wait_dead_letters(1, "one dead letter", WAIT).await;
    worker.stop().await;
    let (active, reason, email) = row(&store, 1).await.unwrap();
    assert_eq!((active, reason.as_deref()), (false, Some("deleted")));
    assert_eq!(email.as_deref(), Some("user1@example.com"));
    let dead = env.dead_letters().await;
    assert_eq!(
        header(&dead[0], "x-error-kind").as_deref(),
        Some("email_conflict")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_a_trigger_refuses_is_dead_lettered_and_the_users_behind_it_flow() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    refusing_trigger(&store).await;
    let worker = env.start().await;
    let p = env.publisher().await;
    let mut refused = event(
        "user.created",
        1,
        "2024-01-01T00:00:00Z",
        "student",
        &["lms"],
    );
    refused["user"]["first_name"] = "Refused".into();
    p.publish_json(&refused).await;
    for u in 2..=6 {
        p.create_student(u, &["lms"]).await;
    }
    wait_for("the others applied", WAIT, || async {
        let mut all = true;
        for u in 2..=6 {
            all &= row(&store, u).await.is_some();
        }
        all
    })
    .await;
    env.wait_dead_letters(1, "the refused one dead-lettered", WAIT)
        .await;
    let (status, body) = http_get(worker.http, "/readyz").await;
    assert_eq!(
        status, 200,
        "one refused row is not a database outage: {body}"
    );
    worker.stop().await;
    let dead = env.dead_letters().await;
    assert_eq!(
        header(&dead[0], "x-error-kind").as_deref(),
        Some("retries_exhausted")
    );
    let error = header(&dead[0], "x-error").unwrap();
    assert!(error.contains("P0001"), "{error}");
    assert!(row(&store, 1).await.is_none());
}

#[tokio::test]
async fn a_statement_timeout_on_one_row_is_that_rows_failure() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    for sql in [
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.first_name = 'Slow' THEN PERFORM pg_sleep(2); END IF; RETURN NEW; END $$",
        "CREATE TRIGGER slow BEFORE INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION slow()",
        &format!(
            "ALTER DATABASE {} SET statement_timeout = '300ms'",
            env.db.name
        ),
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    let store = env.store(); // new sessions pick up the timeout
    let mut slow = event(
        "user.created",
        1,
        "2024-01-01T00:00:00Z",
        "student",
        &["lms"],
    );
    slow["user"]["first_name"] = "Slow".into();
    let batch = [
        slow,
        event(
            "user.created",
            2,
            "2024-01-01T00:00:00Z",
            "student",
            &["lms"],
        ),
    ];
    let results = apply_batch(&store, &batch).await;
    assert!(
        matches!(&results[0].1, EventResult::Rejected(why) if why.contains("57014")),
        "{results:?}"
    );
    assert_eq!(results[1].1, EventResult::Done(decide::Outcome::Applied));
}

#[tokio::test]
async fn a_deadlock_is_tried_again_at_once_and_applies() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    // Fails the first three writes as a deadlock victim would, then lets them through.
    for sql in [
        // A sequence, since a rolled-back attempt keeps what nextval gave it.
        "CREATE SEQUENCE victims",
        "CREATE FUNCTION victim() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF nextval('victims') <= 3 THEN \
             RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END IF; \
           RETURN NEW; END $$",
        "CREATE TRIGGER victim BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION victim()",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    let batch = [1, 2].map(|u| {
        event(
            "user.created",
            u,
            "2024-01-01T00:00:00Z",
            "student",
            &["lms"],
        )
    });
    let results = apply_batch(&store, &batch).await;
    assert!(
        results
            .iter()
            .all(|(_, r)| *r == EventResult::Done(decide::Outcome::Applied)),
        "{results:?}"
    );
}

#[tokio::test]
async fn an_import_applies_the_older_record_when_the_newer_one_of_the_user_fails() {
    let env = Env::new().await;
    let store = env.store();
    two_users(&store).await;
    let new_hash = bcrypt::hash("imported", 4).unwrap();
    let user = |ts: &str, email: &str, hash: &str| {
        serde_json::json!({
            "id": uid(1).to_string(), "email": email, "role": "student",
            "password_hash": hash, "allowed_services_json": "[\"lms\"]", "timestamp": ts,
        })
    };
    let text = format!(
        "{}\n{}\n",
        user("2024-01-02T00:00:00Z", "user1@example.com", &new_hash),
        user("2024-01-03T00:00:00Z", "user2@example.com", HASH),
    );
    let opts = user_sync::ops::import::ImportOptions {
        as_of: None,
        batch_size: 100,
        ..Default::default()
    };
    let summary = env.import_text(&text, &opts).await.unwrap();
    assert_eq!(summary.email_conflicts, [2]);
    assert_eq!(summary.outcomes.get("updated"), Some(&1), "{summary:?}");
    assert_eq!(summary.outcomes.get("stale"), None, "{summary:?}");
    assert_eq!(hash_of(&store, 1).await.as_deref(), Some(new_hash.as_str()));
}

/// A row-level-security policy of the backend's denies one row (42501): that row fails,
/// the other commits. Superusers bypass policies, so the store connects as a role of the
/// test's own, dropped at the end.
#[tokio::test]
async fn a_row_level_security_denial_is_that_rows_failure() {
    let env = Env::new().await;
    let admin = env.store();
    admin.migrate().await.unwrap();
    let role = format!("{}_writer", env.db.name);
    for sql in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT USAGE ON SCHEMA user_sync TO {role}"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA user_sync TO {role}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA user_sync TO {role}"),
        "ALTER TABLE users ENABLE ROW LEVEL SECURITY".into(),
        "CREATE POLICY everyone ON users USING (true) WITH CHECK (first_name <> 'Blocked')".into(),
    ] {
        sqlx::query(&sql).execute(admin.pool()).await.unwrap();
    }
    let url = pg_url_as(&role, &env.db.name);
    let mut vars: std::collections::HashMap<String, String> = env.vars().into_iter().collect();
    vars.insert("database_url".into(), url);
    let settings = user_sync::settings::Settings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let store = Store::new(&settings).unwrap();
    let mut blocked = event(
        "user.created",
        1,
        "2024-01-01T00:00:00Z",
        "student",
        &["lms"],
    );
    blocked["user"]["first_name"] = "Blocked".into();
    let batch = [
        blocked,
        event(
            "user.created",
            2,
            "2024-01-01T00:00:00Z",
            "student",
            &["lms"],
        ),
    ];
    let results = apply_batch(&store, &batch).await;
    store.pool().close().await;
    for sql in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        let _ = sqlx::query(&sql).execute(admin.pool()).await;
    }
    assert!(
        matches!(&results[0].1, EventResult::Rejected(why) if why.contains("42501")),
        "{results:?}"
    );
    assert_eq!(results[1].1, EventResult::Done(decide::Outcome::Applied));
}
