//! A failure inside a batch takes no other event with it: an older event of the failing
//! user still lands, the rest of the batch commits, and isolating the failure stays cheap
//! and leaves one audit row per event.

use super::*;
use crate::support::*;

async fn hash_of(store: &Store, user: u8) -> Option<String> {
    sqlx::query_scalar("SELECT password_hash FROM users WHERE auth_user_id = $1")
        .bind(uid(user))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

fn taking_user2s_email(ts: &str) -> serde_json::Value {
    taking_email_of(1, 2, ts)
}

/// A user's deletion lands when a newer update of the same user in the same batch fails: the
/// failure takes only the failing event with it.
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

/// The same for a password change: the older event's hash is stored although the newer
/// update fails.
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
    p.delete(1, "2024-01-02T00:00:00Z").await;
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

/// An import applies a user's older record when their newer one fails, as the worker does
/// with events.
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

/// One user with 60 updates in a batch, the newest taking another user's email: isolating
/// the failure takes at most 4 transactions (the failing event dropped, the rest applied
/// again as one), and the newest event that did not fail wins. One transaction per event
/// would make a single chatty user cost BATCH_SIZE serial transactions.
#[tokio::test]
async fn one_failing_event_among_60_of_a_user_costs_a_few_transactions() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let created = [1, 2].map(|u| planned(&created(u)));
    let (users, losers) = decide::reduce(&created);
    isolate_failures(&store, &created, &users, &losers, Commit::Yes, None)
        .await
        .unwrap();
    // Counts attempts: one watermark upsert statement per attempt (a sequence is not
    // rolled back with its transaction).
    for sql in [
        "CREATE SEQUENCE attempts",
        "CREATE FUNCTION count_attempt() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           PERFORM nextval('attempts'); RETURN NULL; END $$",
        "CREATE TRIGGER count_attempt AFTER INSERT ON user_watermarks \
           FOR EACH STATEMENT EXECUTE FUNCTION count_attempt()",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    let mut events: Vec<serde_json::Value> = (0..59)
        .map(|i| {
            let mut e = event(
                "user.updated",
                1,
                &format!("2024-02-01T00:{:02}:00Z", i),
                "student",
                &["lms"],
            );
            e["user"]["last_name"] = format!("v{i}").into();
            e
        })
        .collect();
    events.push(taking_email_of(1, 2, "2024-02-02T00:00:00Z"));
    let planned: Vec<Planned> = events.iter().map(planned).collect();
    let (users, losers) = decide::reduce(&planned);
    let results = isolate_failures(&store, &planned, &users, &losers, Commit::Yes, None)
        .await
        .unwrap();
    assert_eq!(results.len(), 60);
    assert_eq!(
        last_name(&store, 1).await.as_deref(),
        Some("v58"),
        "the newest event that did not fail wins"
    );
    let attempts: i64 =
        sqlx::query_scalar("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM attempts")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(
        attempts <= 4,
        "{attempts} transactions to apply one user's batch with one failing event"
    );
}

/// After a failure in a batch is isolated, the audit trail holds one row per event: never
/// both a `stale` and an applied row for one event, and the dead-lettered one recorded
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_writes_one_audit_row_per_event() {
    let env = Env::new().await.set("batch_max_wait_ms", "500");
    let worker = env.start().await;
    let p = env.publisher().await;
    create_all(&env, &p, &[1, 2]).await;
    worker.stop().await;
    let mut change = event(
        "user.updated",
        1,
        "2024-01-02T00:00:00Z",
        "student",
        &["lms"],
    );
    change["user"]["last_name"] = "Second".into();
    p.publish_json(&change).await;
    p.delete(1, "2024-01-03T00:00:00Z").await;
    p.publish_json(&taking_email_of(1, 2, "2024-01-04T00:00:00Z"))
        .await;
    let worker = env.start().await;
    wait_for("dead-lettered", WAIT, || async {
        dlq_depth(&env).await == 1
    })
    .await;
    let store = env.store();
    let day = |t: time::OffsetDateTime| t.date().to_string();
    wait_for("dead letter audited", WAIT, || async {
        let trail = store.trail(uid(1), 50).await.unwrap();
        trail.iter().any(|t| day(t.event_ts) == "2024-01-04")
    })
    .await;
    worker.stop().await;
    let trail = store.trail(uid(1), 50).await.unwrap();
    let rows: Vec<(String, String)> = trail
        .into_iter()
        .map(|t| (day(t.event_ts), t.decision))
        .collect();
    let per_event = |d: &str| rows.iter().filter(|(ts, _)| ts == d).count();
    for d in ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"] {
        assert_eq!(per_event(d), 1, "{d}: {rows:?}");
    }
    assert_eq!(last_name(&store, 1).await.as_deref(), Some("Second"));
    assert!(!row(&store, 1).await.unwrap().0);
}
