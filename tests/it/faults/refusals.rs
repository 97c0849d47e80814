//! What the database refuses for one row (a backend's trigger, a statement timeout, a
//! row-level-security policy) is that row's failure, dead-lettered after its retries,
//! while a deadlock is contention, tried again at once.

use super::*;
use crate::support::*;

/// A row the backend's trigger refuses is that event's failure: retried, then dead-lettered
/// with the SQLSTATE, while the users behind it are applied and the worker stays ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_a_trigger_refuses_is_dead_lettered_and_the_users_behind_it_flow() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    refusing_trigger(&store).await;
    let worker = env.start().await;
    let p = env.publisher().await;
    let mut refused = created(1);
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

/// A statement timeout on one slow row is that row's failure; the rest of its batch
/// commits.
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
    let mut slow = created(1);
    slow["user"]["first_name"] = "Slow".into();
    let batch = [slow, created(2)];
    let results = apply_batch(&store, &batch).await;
    assert!(
        matches!(&results[0].1, EventResult::Rejected(why) if why.contains("57014")),
        "{results:?}"
    );
    assert_eq!(results[1].1, EventResult::Done(decide::Outcome::Applied));
}

/// A deadlock is contention, not a bad event: the batch is tried again at once and every
/// event applies.
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
    let batch = [1, 2].map(created);
    let results = apply_batch(&store, &batch).await;
    assert!(
        results
            .iter()
            .all(|(_, r)| *r == EventResult::Done(decide::Outcome::Applied)),
        "{results:?}"
    );
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
    let mut blocked = created(1);
    blocked["user"]["first_name"] = "Blocked".into();
    let batch = [blocked, created(2)];
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

/// Row-level security on `audit_trail` too (a permissive policy, a writer role that is not
/// the owner): Postgres refuses COPY FROM on such a table (0A000) where an INSERT passes
/// the policy. Enabled while a worker runs, the refused COPY switches it to INSERT and no
/// event of the batch fails; a store started on it writes by INSERT from the first line.
#[tokio::test]
async fn row_level_security_on_the_trail_writes_it_and_fails_no_event() {
    let env = Env::new().await;
    let admin = env.store();
    admin.migrate().await.unwrap();
    let role = format!("{}_trail", env.db.name);
    for sql in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT USAGE ON SCHEMA user_sync TO {role}"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA user_sync TO {role}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA user_sync TO {role}"),
    ] {
        sqlx::query(&sql).execute(admin.pool()).await.unwrap();
    }
    let mut vars: std::collections::HashMap<String, String> = env.vars().into_iter().collect();
    vars.insert("database_url".into(), pg_url_as(&role, &env.db.name));
    let settings = user_sync::settings::Settings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let running = Store::new(&settings).unwrap();
    let dead = |user| user_sync::store::DeadLetterEntry {
        user_id: uid(user),
        event_id: None,
        event_type: "user.updated",
        event_ts: time::OffsetDateTime::now_utc(),
        received_at: time::OffsetDateTime::now_utc(),
        reason: "dead".into(),
    };
    let before = running.audit_dead_letters(&[dead(9)]).await;
    for sql in [
        "ALTER TABLE audit_trail ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY everyone ON audit_trail USING (true) WITH CHECK (true)",
    ] {
        sqlx::query(sql).execute(admin.pool()).await.unwrap();
    }
    let applied = apply_trailed(&running, &[created(1), created(2)]).await;
    let after = running.audit_dead_letters(&[dead(9)]).await;
    let started = Store::new(&settings).unwrap();
    let started_applied = apply_trailed(&started, &[created(3)]).await;
    running.pool().close().await;
    started.pool().close().await;
    let lines = count(&admin, "SELECT count(*) FROM audit_trail").await;
    for sql in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        let _ = sqlx::query(&sql).execute(admin.pool()).await;
    }
    let done = EventResult::Done(decide::Outcome::Applied);
    assert_eq!(applied, [(0, done.clone()), (1, done.clone())]);
    assert_eq!(started_applied, [(0, done)]);
    assert!(before.is_ok() && after.is_ok(), "{before:?} {after:?}");
    assert_eq!(lines, 5);
}

/// Applies `events` as one batch with its trail, the way the worker does.
async fn apply_trailed(store: &Store, events: &[serde_json::Value]) -> Vec<(usize, EventResult)> {
    let planned: Vec<Planned> = events.iter().map(planned).collect();
    let meta: Vec<user_sync::store::EventMeta> = planned
        .iter()
        .map(|_| user_sync::store::EventMeta {
            event_id: None,
            event_type: "user.created",
            received_at: time::OffsetDateTime::now_utc(),
        })
        .collect();
    let trail = user_sync::pipeline::Trail {
        service: "lms",
        meta: &meta,
        no_ops: true,
    };
    let (users, losers) = decide::reduce(&planned);
    let mut results = isolate_failures(store, &planned, &users, &losers, Commit::Yes, Some(trail))
        .await
        .unwrap();
    results.sort_by_key(|(i, _)| *i);
    results
}
