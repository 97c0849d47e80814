//! Adversarial probes of the isolation / brake / classification / input changes, written in
//! review. Each test states what the service promises; those that begin "FAILED BEFORE"
//! failed on the code under review and pass since the fix named in their comment.

use crate::helpers::*;
use std::time::Duration;
use user_sync::decide::{self, Planned};
use user_sync::event::DEFAULT_MAX_BODY_BYTES;
use user_sync::pipeline::isolate_failures;
use user_sync::store::{Commit, Store};

const WAIT: Duration = Duration::from_secs(45);

async fn hold_depth(env: &Env) -> u32 {
    queue_counts(&env.hold()).await.map_or(0, |c| c.0)
}

async fn dlq_depth(env: &Env) -> u32 {
    queue_counts(&env.dlq()).await.map_or(0, |c| c.0)
}

async fn active_of(store: &Store, users: impl IntoIterator<Item = u8>) -> usize {
    let mut n = 0;
    for u in users {
        if row(store, u).await.is_some_and(|r| r.0) {
            n += 1;
        }
    }
    n
}

/// Creates users through a running worker and waits until they are all active.
async fn create_all(env: &Env, p: &Publisher, users: &[u8]) {
    for &u in users {
        p.create_student(u, &["lms"]).await;
    }
    let store = env.store();
    let n = users.len();
    wait_for("created", WAIT, || async {
        active_of(&store, users.iter().copied()).await == n
    })
    .await;
}

/// Engages the brake (threshold 1): deletes users 100 and 101, one is parked; waits until
/// the engagement is logged, so it survives a restart.
async fn engage_brake(env: &Env, p: &Publisher) {
    create_all(env, p, &[100, 101]).await;
    for u in [100, 101] {
        p.send(
            "user.deleted",
            u,
            "2024-01-05T00:00:00Z",
            "student",
            &["lms"],
        )
        .await;
    }
    wait_for("one deletion parked", WAIT, || async {
        hold_depth(env).await == 1
    })
    .await;
    let store = env.store();
    wait_for("engagement logged", WAIT, || async {
        store.brake_last().await.unwrap().is_some_and(|e| e.engaged)
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 1. Isolation replays an older deactivation past the brake.
// ---------------------------------------------------------------------------------------

/// FAILED BEFORE. `brake_split` looks only at each user's *newest* event. When that is an
/// active update that fails (email conflict), `isolate_failures` replays the user's older
/// events one by one, and an older deletion among them is applied although the brake is
/// engaged: it was never offered to the brake. The brake's whole promise ("every
/// deactivation after them is parked") is broken by any deletion followed in the same batch
/// by a failing update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_deletion_behind_a_failing_update_is_parked_by_an_engaged_brake() {
    let env = Env::new()
        .await
        .set("deactivation_brake", "1")
        .set("batch_max_wait_ms", "500");
    let worker = env.start().await;
    let p = env.publisher().await;
    create_all(&env, &p, &[1, 2]).await;
    engage_brake(&env, &p).await;
    worker.stop().await;

    // One batch: user 1 deleted at t2, then (t3) an update taking user 2's email.
    p.send(
        "user.deleted",
        1,
        "2024-01-06T00:00:00Z",
        "student",
        &["lms"],
    )
    .await;
    p.publish_json(&taking_email_of(1, 2, "2024-01-07T00:00:00Z"))
        .await;
    let worker = env.start().await;
    // A held user's events are parked together: the deletion and the update after it.
    // In one batch both events are parked together. Should the worker cut them into two
    // batches, the deletion is parked alone and the update, not a deactivation, meets its
    // email conflict and is dead-lettered. Either way the deletion is not applied.
    wait_for("user 1's events settled", WAIT, || async {
        let (held, dead) = (hold_depth(&env).await, dlq_depth(&env).await);
        (held, dead) == (3, 0) || (held, dead) == (2, 1)
    })
    .await;
    worker.stop().await;
    let store = env.store();
    let (active, reason, _) = row(&store, 1).await.unwrap();
    assert!(
        active,
        "the brake is engaged: user 1's deletion must be parked, not applied (reason {reason:?})"
    );
}

/// FAILED BEFORE. Same hole, brake not yet engaged: threshold 2, one batch of 6 users each
/// deleted and then given a conflicting update. All 6 deletions are applied by the
/// isolation rounds, none is parked, and the brake does not even engage for this batch.
/// A buggy upstream that deletes users and re-sends a stale email (a common shape of bug)
/// takes the whole school out in one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_behind_failing_updates_respect_the_threshold() {
    let env = Env::new()
        .await
        .set("deactivation_brake", "2")
        .set("batch_max_wait_ms", "500");
    let victims: Vec<u8> = (1..=6).collect();
    let owners: Vec<u8> = (11..=16).collect();
    let worker = env.start().await;
    let p = env.publisher().await;
    create_all(&env, &p, &[victims.clone(), owners.clone()].concat()).await;
    worker.stop().await;
    for &u in &victims {
        p.send(
            "user.deleted",
            u,
            "2024-01-06T00:00:00Z",
            "student",
            &["lms"],
        )
        .await;
        p.publish_json(&taking_email_of(u, u + 10, "2024-01-07T00:00:00Z"))
            .await;
    }
    let worker = env.start().await;
    // In one batch: two users admitted (their deletion applied, their update
    // dead-lettered), four parked with both their events. However the worker cuts the
    // batches, every one of the 12 events ends applied, parked or dead-lettered.
    let store = env.store();
    wait_for("the 12 events settled", WAIT, || async {
        let deactivated = victims.len() - active_of(&store, victims.iter().copied()).await;
        dlq_depth(&env).await as usize + hold_depth(&env).await as usize + deactivated == 12
    })
    .await;
    worker.stop().await;
    let deactivated = victims.len() - active_of(&store, victims.iter().copied()).await;
    assert!(
        deactivated <= 2,
        "DEACTIVATION_BRAKE=2 but {deactivated} users were deactivated; held: {}",
        hold_depth(&env).await
    );
}

// ---------------------------------------------------------------------------------------
// 2. A held user's superseded events are acknowledged as stale and lost.
// ---------------------------------------------------------------------------------------

async fn last_name(store: &Store, user: u8) -> Option<String> {
    sqlx::query_scalar("SELECT last_name FROM users WHERE auth_user_id = $1")
        .bind(uid(user))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// FAILED BEFORE. With the brake engaged, a user's batch [t2 rename, t3 update the backend
/// refuses, t4 delete]: t4 and t3 are parked, t2 (a loser of `reduce`) is acknowledged as
/// `stale`. After `brake release`, t3 is refused again and dead-lettered, so the table must
/// equal t2 then t4 applied: last name "Kept". t2 is gone: the convergence rule the
/// isolation change was written for is broken whenever the user is held. (Nor does t2 get
/// an audit row.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_users_older_events_are_parked_with_it_and_applied_after_release() {
    let env = Env::new()
        .await
        .set("deactivation_brake", "1")
        .set("batch_max_wait_ms", "500");
    let store = env.store();
    store.migrate().await.unwrap();
    refusing_trigger(&store).await;
    let worker = env.start().await;
    let p = env.publisher().await;
    create_all(&env, &p, &[1]).await;
    engage_brake(&env, &p).await;
    worker.stop().await;

    let mut rename = event(
        "user.updated",
        1,
        "2024-01-06T00:00:00Z",
        "student",
        &["lms"],
    );
    rename["user"]["last_name"] = "Kept".into();
    let mut refused = event(
        "user.updated",
        1,
        "2024-01-07T00:00:00Z",
        "student",
        &["lms"],
    );
    refused["user"]["last_name"] = "Kept".into();
    refused["user"]["first_name"] = "Refused".into();
    p.publish_json(&rename).await;
    p.publish_json(&refused).await;
    p.send(
        "user.deleted",
        1,
        "2024-01-08T00:00:00Z",
        "student",
        &["lms"],
    )
    .await;
    let worker = env.start().await;
    // In one batch all three are parked. Should the worker cut them into batches without
    // a deactivation, the rename is applied and the refused update dead-lettered there;
    // either way each of the three events ends parked, dead-lettered or applied.
    wait_for("user 1's three events settled", WAIT, || async {
        let renamed = last_name(&store, 1).await.as_deref() == Some("Kept");
        hold_depth(&env).await - 1 + dlq_depth(&env).await + u32::from(renamed) == 3
    })
    .await;
    let held = hold_depth(&env).await as usize;
    let released = user_sync::ops::brake::release(&env.settings())
        .await
        .unwrap();
    assert_eq!(released.moved, held);
    wait_for("user 1 deactivated", WAIT, || async {
        row(&store, 1).await.is_some_and(|r| !r.0)
    })
    .await;
    wait_for("the refused update dead-lettered", WAIT, || async {
        dlq_depth(&env).await == 1
    })
    .await;
    worker.stop().await;
    assert_eq!(
        last_name(&store, 1).await.as_deref(),
        Some("Kept"),
        "t2 (rename) was acked as stale while its user was parked, and t3 never applied"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Database conditions that hit every event alike are dead-lettered, not paused on.
// ---------------------------------------------------------------------------------------

/// FAILED BEFORE. A `lock_timeout` (55P03) or a lock wait cut by `statement_timeout` (57014)
/// is classified as one event's fault. A migration (or a VACUUM FULL, a REINDEX) holding
/// the users table for a few seconds then makes *every* event fail alone, go through the
/// retry tiers and land in the DLQ as `retries_exhausted`, instead of pausing the worker
/// as an outage does. Nothing was wrong with any event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_lock_held_by_a_migration_pauses_and_dead_letters_nothing() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {} SET lock_timeout = '200ms'",
        env.db.name
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let store = env.store(); // new sessions pick the setting up
    let worker = env.start().await;
    let p = env.publisher().await;
    create_all(&env, &p, &[1]).await;

    // A migration takes the table for 5 s.
    let mut migration = store.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = 0")
        .execute(&mut *migration)
        .await
        .unwrap();
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *migration)
        .await
        .unwrap();
    for u in 2..=4 {
        p.create_student(u, &["lms"]).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    migration.commit().await.unwrap();

    wait_for("the three applied", WAIT, || async {
        active_of(&store, 2..=4).await == 3
    })
    .await;
    let applied = active_of(&store, 2..=4).await;
    worker.stop().await;
    let errors: Vec<Option<String>> = env
        .dead_letters()
        .await
        .iter()
        .map(|d| header(d, "x-error"))
        .collect();
    assert_eq!(
        (errors.len(), applied),
        (0, 3),
        "a lock held for 5 s is not three bad events; dead letters: {errors:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. `import` skips the future-skew rule the worker enforces.
// ---------------------------------------------------------------------------------------

/// FAILED BEFORE. The worker refuses timestamps past `MAX_FUTURE_SKEW_SECS` because "an event
/// dated far ahead would win every comparison and freeze its user until that date".
/// `import` decodes with `event::decode` (lenient rules, no clock), so a record with a
/// mistyped year (9024) is applied, and every live event of that user is `stale` for
/// 7000 years.
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

// ---------------------------------------------------------------------------------------
// 5. A release token is honoured on any route, for ever.
// ---------------------------------------------------------------------------------------

/// FAILED BEFORE. `released()` trusts `x-brake-release` on deliveries from the auth exchange,
/// against the rule of `headers.rs` (our headers count only on our own copies), and a
/// token stays valid for ever. Anyone who once saw a released copy (a dead-lettered one
/// shows the token in `dlq show`) can send deletions past every future engagement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_token_on_a_producers_deletion_does_not_pass_the_brake() {
    let env = Env::new().await.set("deactivation_brake", "1");
    let settings = env.settings();
    // A release long ago (nothing held then): its token is in brake_log.
    env.declare().await;
    user_sync::ops::brake::release(&settings).await.unwrap();
    let store = env.store();
    let token: String = sqlx::query_scalar("SELECT token FROM brake_log WHERE token IS NOT NULL")
        .fetch_one(store.pool())
        .await
        .unwrap();

    let worker = env.start().await;
    let p = env.publisher().await;
    create_all(&env, &p, &[1]).await;
    engage_brake(&env, &p).await;

    let release = with_header(
        "x-brake-release",
        lapin::types::AMQPValue::LongString(token.into()),
    );
    let body = event(
        "user.deleted",
        1,
        "2024-01-09T00:00:00Z",
        "student",
        &["lms"],
    );
    p.publish_with("user.deleted", body.to_string().as_bytes(), release)
        .await;
    wait_for("the deletion handled", WAIT, || async {
        hold_depth(&env).await == 2 || row(&store, 1).await.is_some_and(|r| !r.0)
    })
    .await;
    worker.stop().await;
    assert!(
        row(&store, 1).await.unwrap().0,
        "a producer's deletion with a replayed token passed the engaged brake"
    );
}

// ---------------------------------------------------------------------------------------
// 6. Cost of the isolation rounds.
// ---------------------------------------------------------------------------------------

/// FAILED BEFORE (cost; fixed by applying a failing user's events as spans). One user
/// with 60 updates in a batch whose newest takes another user's
/// email: `isolate_failures` goes one transaction per event (61 attempts), although dropping
/// the failed event and re-reducing the rest gives the same table in 2. With BATCH_SIZE
/// 1000 a single chatty user costs 1000 serial transactions for that batch.
#[tokio::test]
async fn one_failing_event_among_60_of_a_user_costs_a_few_transactions() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let created = [1, 2].map(|u| {
        planned(&event(
            "user.created",
            u,
            "2024-01-01T00:00:00Z",
            "student",
            &["lms"],
        ))
    });
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

// ---------------------------------------------------------------------------------------
// 7. Probes that hold (kept as regression guards).
// ---------------------------------------------------------------------------------------

/// PASSES. Audit trail after isolation: one row per event, never a `stale` and an applied
/// row for the same event, and the dead-lettered one recorded once.
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
    p.send(
        "user.deleted",
        1,
        "2024-01-03T00:00:00Z",
        "student",
        &["lms"],
    )
    .await;
    p.publish_json(&taking_email_of(1, 2, "2024-01-04T00:00:00Z"))
        .await;
    let worker = env.start().await;
    wait_for("dead-lettered", WAIT, || async {
        dlq_depth(&env).await == 1
    })
    .await;
    let store = env.store();
    wait_for("dead letter audited", WAIT, || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_log WHERE auth_user_id = $1 AND event_ts = '2024-01-04T00:00:00Z'",
        )
        .bind(uid(1))
        .fetch_one(store.pool())
        .await
        .unwrap();
        n >= 1
    })
    .await;
    worker.stop().await;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT to_char(event_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD'), decision FROM audit_log \
         WHERE auth_user_id = $1 ORDER BY id",
    )
    .bind(uid(1))
    .fetch_all(store.pool())
    .await
    .unwrap();
    let per_event = |d: &str| rows.iter().filter(|(ts, _)| ts == d).count();
    for d in ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"] {
        assert_eq!(per_event(d), 1, "{d}: {rows:?}");
    }
    assert_eq!(last_name(&store, 1).await.as_deref(), Some("Second"));
    assert!(!row(&store, 1).await.unwrap().0);
}

/// PASSES. A timestamp exactly at the skew boundary is accepted, one microsecond past
/// it refused (decode rules are per batch; checked through the public decoder).
#[test]
fn the_future_skew_boundary_is_inclusive() {
    use user_sync::event::{Rules, decode_with};
    let now = time::OffsetDateTime::parse(
        "2025-06-01T00:00:00Z",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let rules = Rules {
        latest: Some(now + Duration::from_secs(60)),
        ..Rules::lenient(DEFAULT_MAX_BODY_BYTES)
    };
    let at = |ts: &str| {
        event("user.updated", 1, ts, "student", &["lms"])
            .to_string()
            .into_bytes()
    };
    assert!(decode_with(&at("2025-06-01T00:01:00Z"), "user.updated", &rules).is_ok());
    assert!(decode_with(&at("2025-06-01T00:01:00.000001Z"), "user.updated", &rules).is_err());
    assert!(decode_with(&at("2025-06-01T00:01:00.0000001Z"), "user.updated", &rules).is_ok());
}

/// PASSES. With signing on, a retried copy (back through the default exchange, with our
/// `x-routing-key`) is verified again and still accepted: the conflict is dead-lettered as
/// `email_conflict`, not as a bad signature or a type mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_event_survives_its_retries_and_dead_letters_for_its_own_cause() {
    const KEY: &str = "attack-key-0123456789abcdef";
    let env = Env::new().await.set("event_signing_keys", KEY);
    let worker = env.start().await;
    let p = env.publisher().await;
    let publish = |e: serde_json::Value| {
        let p = &p;
        async move {
            let body = e.to_string();
            let key = e["event_type"].as_str().unwrap().to_string();
            p.publish_with(&key, body.as_bytes(), signed_by(KEY, body.as_bytes()))
                .await;
        }
    };
    for u in [1, 2] {
        publish(event(
            "user.created",
            u,
            "2024-01-01T00:00:00Z",
            "student",
            &["lms"],
        ))
        .await;
    }
    let store = env.store();
    wait_for("created", WAIT, || async {
        active_of(&store, [1, 2]).await == 2
    })
    .await;
    publish(taking_email_of(1, 2, "2024-01-02T00:00:00Z")).await;
    wait_for("dead-lettered", WAIT, || async {
        dlq_depth(&env).await == 1
    })
    .await;
    worker.stop().await;
    let dead = env.dead_letters().await;
    assert_eq!(
        header(&dead[0], "x-error-kind").as_deref(),
        Some("email_conflict")
    );
    assert_eq!(
        user_sync::headers::header_int(&dead[0].properties, "x-attempts"),
        Some(3)
    );
}
