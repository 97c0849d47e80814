//! The audit trail and `user-sync explain`: a user's history read back, dead letters of
//! users never seen, a trail that rolls back with its transaction and is pruned by age.

use super::*;
use crate::support::*;
use user_sync::decide;
use user_sync::store::{Audit, Commit, EventMeta, EventResult};

fn explain(env: &Env, args: &[&str]) -> String {
    env.command(&[&["explain"], args].concat()).ok().stdout
}

/// The trail's lines with the received-at column (now, so different each run) masked.
fn masked(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("    20") {
            Some(_) if l.len() > 24 => format!("    <received>{}", &l[24..]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn trail_rows(store: &user_sync::store::Store) -> i64 {
    count(store, "SELECT count(*) FROM audit_trail").await
}

/// `explain` reads a user's history back (grants, revocations, a deletion) by email, auth id
/// or local id, as text and JSON, without a password hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_of_grants_revocations_and_deletion_reads_back_in_explain() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    let store = env.store();
    let steps: [(&str, &str, &[&str], usize); 5] = [
        ("user.created", "2024-01-01T00:00:00Z", &["lms"], 1),
        ("user.updated", "2024-02-01T00:00:00Z", &["sat"], 2),
        ("user.updated", "2024-03-01T00:00:00Z", &["lms"], 3),
        ("user.updated", "2023-12-01T00:00:00Z", &["lms"], 4),
        ("user.deleted", "2024-04-01T00:00:00Z", &["lms"], 5),
    ];
    for (kind, ts, services, rows) in steps {
        p.send(kind, 1, ts, "student", services).await;
        wait_for("trail row", WAIT, || async {
            trail_rows(&store).await == rows as i64
        })
        .await;
    }
    worker.stop().await;

    let text = explain(&env, &["user1@example.com"]);
    assert!(!text.contains(HASH));
    let id = uid(1);
    let expected = format!(
        "user {id}
  row #1: user1@example.com (student), services [lms], INACTIVE (deleted)
  status from user.deleted of 2024-04-01 00:00:00Z (inactive); fields from 2024-03-01 00:00:00Z
  trail, newest first:
    received              event         event time            decision     reason                                                changed
    <received>  user.deleted  2024-04-01 00:00:00Z  deactivated  deleted upstream                                      is_active,deactivation_reason
    <received>  user.updated  2023-12-01 00:00:00Z  stale        older than the applied event of 2024-03-01T00:00:00Z
    <received>  user.updated  2024-03-01 00:00:00Z  reactivated  active again                                          is_active,deactivation_reason
    <received>  user.updated  2024-02-01 00:00:00Z  deactivated  lms not in allowed services                           is_active,deactivation_reason
    <received>  user.created  2024-01-01 00:00:00Z  applied      new row                                               email,first_name,last_name,password_hash,role,allowed_services,is_active
dead letters: none for this user"
    );
    assert_eq!(masked(&text), expected, "\n{text}");

    let json = explain(&env, &[&id.to_string(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let user = &v["users"][0];
    assert_eq!(user["row"]["is_active"], false);
    assert_eq!(user["watermark"]["status_event_type"], "user.deleted");
    let decisions: Vec<&str> = user["trail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["decision"].as_str().unwrap())
        .collect();
    assert_eq!(
        decisions,
        [
            "deactivated",
            "stale",
            "reactivated",
            "deactivated",
            "applied"
        ]
    );
    assert_eq!(v["dead_letters"], serde_json::json!([]));
    assert!(!json.contains(HASH));
    let local = explain(&env, &["1"]);
    assert_eq!(local, text, "the local row id finds the same user");

    let hashes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_trail t WHERE t::text LIKE '%$2%'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(hashes, 0);
}

/// `explain` for a user the service never applied shows their dead letters, and consumes
/// none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_never_seen_shows_their_dead_letters() {
    let env = Env::new().await;
    let worker = env.start().await;
    let mut bad = created(9);
    bad["user"]["password_hash"] = "plaintext".into();
    env.publisher().await.publish_json(&bad).await;
    let dlq = env.dlq();
    env.wait_dead_letters(1, "dead-lettered", WAIT).await;
    worker.stop().await;
    let text = explain(&env, &["USER9@example.com"]);
    assert!(
        text.starts_with("USER9@example.com: never seen by this service."),
        "{text}"
    );
    assert!(text.contains("dead letters: 1 for this user"), "{text}");
    assert!(
        text.contains("permanent") && text.contains(&uid(9).to_string()),
        "{text}"
    );
    let json = explain(&env, &[&uid(9).to_string(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["users"], serde_json::json!([]));
    assert_eq!(v["dead_letters"][0]["kind"], "permanent");
    assert_eq!(
        queue_counts(&dlq).await.unwrap().0,
        1,
        "explain consumed nothing"
    );
}

/// The code of a stale `user.updated` line.
fn stale_code() -> i16 {
    use user_sync::decide::trail_code::{ReasonKind, encode};
    let stale = decide::Decision::Applied(decide::Outcome::Stale);
    encode("user.updated", stale, ReasonKind::Stale)
}

fn created_with_email(user: u8, email: &str) -> decide::Planned {
    let mut e = created(user);
    e["user"]["email"] = email.into();
    planned(&e)
}

/// The audit trail rolls back with the change it records, and pruning removes only rows older
/// than AUDIT_RETENTION_DAYS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_rolls_back_with_its_transaction_and_prunes_only_old_rows() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    // The backend refuses one email: that user's change fails and its transaction, trail
    // rows included, rolls back; the other user's commits with its row.
    sqlx::query(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.email = 'refused@example.com' THEN RAISE check_violation USING MESSAGE = 'no'; END IF; \
           RETURN NEW; END $$",
    )
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let planned = vec![
        created_with_email(1, "ok@example.com"),
        created_with_email(2, "refused@example.com"),
    ];
    let (users, losers) = decide::reduce(&planned);
    let meta: Vec<EventMeta> = planned
        .iter()
        .map(|_| EventMeta {
            event_id: None,
            event_type: "user.created",
            received_at: time::OffsetDateTime::now_utc(),
        })
        .collect();
    let audit = Audit {
        service: "lms",
        meta: &meta,
        losers: &losers,
        no_ops: true,
    };

    let rehearsal = store
        .apply_as(&planned, &users, Commit::RollBack, Some(&audit))
        .await
        .unwrap();
    assert_eq!(rehearsal.len(), 2);
    assert_eq!(
        trail_rows(&store).await,
        0,
        "a rolled-back batch leaves no trail"
    );

    let results = store
        .apply_as(&planned, &users, Commit::Yes, Some(&audit))
        .await
        .unwrap();
    assert!(
        results
            .iter()
            .any(|(_, r)| matches!(r, EventResult::Rejected(_)))
    );
    let trail: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT auth_user_id FROM audit_trail")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(trail, [uid(1)], "only the committed change has a trail row");

    sqlx::query(
        "INSERT INTO audit_trail (auth_user_id, event_ts, received_at, code, changed) \
         SELECT $1, now(), now() - make_interval(days => d), $2, 0 \
         FROM unnest(ARRAY[28, 29, 31, 32, 33]) d",
    )
    .bind(uid(3))
    .bind(stale_code())
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(
        store.prune_audit(30).await.unwrap(),
        3,
        "31, 32 and 33 days old"
    );
    assert_eq!(
        trail_rows(&store).await,
        3,
        "the new row and the 28- and 29-day-old stay"
    );
}

/// AUDIT_RETENTION_DAYS=0 keeps no trail at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_zero_keeps_no_trail() {
    let env = Env::new().await.set("audit_retention_days", "0");
    let worker = env.start().await;
    env.publisher().await.create_student(1, &["lms"]).await;
    let store = env.store();
    wait_for("applied", WAIT, || async { row(&store, 1).await.is_some() }).await;
    worker.stop().await;
    assert_eq!(trail_rows(&store).await, 0);
}
