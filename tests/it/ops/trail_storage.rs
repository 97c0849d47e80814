//! How the trail is stored: `audit_trail` (this release) read beside `audit_log` (what the
//! release before writes during a rollout), both pruned, rare values kept verbatim, and no
//! field value in any column.

use super::*;
use crate::support::*;
use time::{Duration as Span, OffsetDateTime};
use user_sync::decide;
use user_sync::store::{Audit, Commit, DeadLetterEntry, EventMeta, Store};

/// Applies `e` as the worker would, its trail line received at `received_at`.
async fn apply(store: &Store, e: &serde_json::Value, event_id: &str, received_at: OffsetDateTime) {
    let planned = vec![planned(e)];
    let (users, losers) = decide::reduce(&planned);
    let meta = [EventMeta {
        event_id: Some(event_id.into()),
        event_type: if e["event_type"] == "user.deleted" {
            "user.deleted"
        } else {
            "user.created"
        },
        received_at,
    }];
    let audit = Audit {
        service: "lms",
        meta: &meta,
        losers: &losers,
        no_ops: true,
    };
    store
        .apply_as(&planned, &users, Commit::Yes, Some(&audit))
        .await
        .unwrap();
}

/// A line as the release before (0.2.0) writes it into `audit_log`.
async fn old_line(
    store: &Store,
    event_id: &str,
    ts: &str,
    received: OffsetDateTime,
    line: [&str; 3],
) {
    let [event_type, decision, reason] = line;
    sqlx::query(
        "INSERT INTO audit_log (auth_user_id, event_id, event_type, event_ts, received_at, \
           decision, reason, changed) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], \
                              $5::timestamptz[], $6::text[], $7::text[], $8::int2[])",
    )
    .bind(vec![uid(1)])
    .bind(vec![event_id])
    .bind(vec![event_type])
    .bind(vec![
        OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).unwrap(),
    ])
    .bind(vec![received])
    .bind(vec![decision])
    .bind(vec![reason])
    .bind(vec![0i16])
    .execute(store.pool())
    .await
    .unwrap();
}

/// Lines the release before wrote into `audit_log` during a rollout and lines this
/// release wrote into `audit_trail` read back in `explain` as one trail, newest first by
/// when they were received, each with its words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_of_both_releases_read_back_merged_in_time_order() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let now = OffsetDateTime::now_utc();
    let hours_ago = |h| now - Span::hours(h);
    let old = [
        "user.updated",
        "stale",
        "older than a newer event, as 0.2.0 said",
    ];
    old_line(&store, "old-1", "2024-01-01T00:00:00Z", hours_ago(4), old).await;
    let created = event(
        "user.created",
        1,
        "2024-02-01T00:00:00Z",
        "student",
        &["lms"],
    );
    apply(&store, &created, "new-1", hours_ago(3)).await;
    let old = ["user.updated", "applied", "fields updated"];
    old_line(&store, "old-2", "2024-03-01T00:00:00Z", hours_ago(2), old).await;
    let deleted = event(
        "user.deleted",
        1,
        "2024-04-01T00:00:00Z",
        "student",
        &["lms"],
    );
    apply(&store, &deleted, "new-2", hours_ago(1)).await;

    let json = env
        .command(&["explain", &uid(1).to_string(), "--json"])
        .ok()
        .json();
    let lines: Vec<(String, String, String)> = json["users"][0]["trail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
            (s("event_id"), s("decision"), s("reason"))
        })
        .collect();
    let expected = [
        ("new-2", "deactivated", "deleted upstream"),
        ("old-2", "applied", "fields updated"),
        ("new-1", "applied", "new row"),
        ("old-1", "stale", "older than a newer event, as 0.2.0 said"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(lines, expected, "{json}");
    let in_new = count(&store, "SELECT count(*) FROM audit_trail").await;
    assert_eq!(in_new, 2, "this release writes only audit_trail");
}

/// Pruning removes the lines older than the retention from both tables and keeps the
/// newer ones of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_removes_old_lines_from_both_tables_and_keeps_new_ones() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let days = "unnest(ARRAY[1, 29, 31, 45]) d";
    sqlx::query(&format!(
        "INSERT INTO audit_log (auth_user_id, event_type, event_ts, received_at, decision, \
           recorded_at) \
         SELECT $1, 'user.updated', now(), now(), 'stale', now() - make_interval(days => d) \
         FROM {days}"
    ))
    .bind(uid(1))
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO audit_trail (auth_user_id, event_ts, received_at, code, changed) \
         SELECT $1, now(), now() - make_interval(days => d), 0, 0 FROM {days}"
    ))
    .bind(uid(1))
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(
        store.prune_audit(30).await.unwrap(),
        4,
        "31 and 45 days, twice"
    );
    for table in ["audit_log", "audit_trail"] {
        let left = count(&store, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(left, 2, "{table}: the 1- and 29-day-old lines stay");
    }
}

/// An event id that is not a canonical UUID, a dead letter's event type that has no code
/// and a reason in free text read back as they were written; a canonical UUID is stored
/// in its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rare_ids_types_and_reasons_read_back_verbatim() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let canonical = "0b5d1f6e-3c1a-4e8b-9f3d-7a2c4e6b8d10";
    let letter = |event_id: &str, event_type: &'static str, reason: &str, s: i64| DeadLetterEntry {
        user_id: uid(1),
        event_id: Some(event_id.into()),
        event_type,
        event_ts: OffsetDateTime::UNIX_EPOCH + Span::days(19_000),
        received_at: OffsetDateTime::now_utc() - Span::seconds(s),
        reason: reason.into(),
    };
    let letters = [
        letter(
            "evt/42 ünï",
            "user.renamed",
            "permanent: the body's \"x\" field; 100%",
            3,
        ),
        letter(
            "0B5D1F6E-3C1A-4E8B-9F3D-7A2C4E6B8D10",
            "user.updated",
            "",
            2,
        ),
        letter(
            canonical,
            "user.deleted",
            "retryable: database went away",
            1,
        ),
    ];
    store.audit_dead_letters(&letters).await.unwrap();
    let trail = store.trail(uid(1), 10).await.unwrap();
    let got: Vec<_> = trail
        .iter()
        .map(|t| {
            (
                t.event_id.clone().unwrap(),
                t.event_type.clone(),
                t.reason.clone(),
            )
        })
        .collect();
    let expected: Vec<_> = letters
        .iter()
        .rev()
        .map(|l| {
            (
                l.event_id.clone().unwrap(),
                l.event_type.to_string(),
                Some(l.reason.clone()),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert!(
        trail.iter().all(|t| t.decision == "dead-lettered"),
        "{trail:?}"
    );
    let in_bytes =
        "SELECT count(*) FROM audit_trail WHERE event_id IS NOT NULL AND event_key IS NULL";
    assert_eq!(count(&store, in_bytes).await, 1, "the canonical UUID only");
    let typed = "SELECT count(*) FROM audit_trail WHERE event_type_text IS NOT NULL";
    assert_eq!(
        count(&store, typed).await,
        1,
        "the type without a code only"
    );
}

/// No column of `audit_trail` holds a password hash, whatever the events carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_hash_in_any_column_of_the_trail() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    let store = env.store();
    let steps = [
        ("user.created", "2024-01-01T00:00:00Z", 1),
        ("user.updated", "2024-02-01T00:00:00Z", 2),
        ("user.updated", "2023-12-01T00:00:00Z", 3),
        ("user.deleted", "2024-03-01T00:00:00Z", 4),
    ];
    for (kind, ts, lines) in steps {
        p.send(kind, 1, ts, "student", &["lms"]).await;
        wait_for("trail line", WAIT, || async {
            count(&store, "SELECT count(*) FROM audit_trail").await == lines
        })
        .await;
    }
    worker.stop().await;
    let with_hash: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_trail t WHERE position($1 in t::text) > 0 \
           OR t::text LIKE '%$2_$%'",
    )
    .bind(HASH)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(with_hash, 0);
}

/// A reason stored as words (a dead letter's error, here one quoting a password hash) is
/// written with anything shaped like a bcrypt hash masked, as logs and the DLQ show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reason_quoting_a_password_hash_is_written_masked() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let letter = DeadLetterEntry {
        user_id: uid(1),
        event_id: Some("evt-1".into()),
        event_type: "user.updated",
        event_ts: OffsetDateTime::UNIX_EPOCH + Span::days(19_000),
        received_at: OffsetDateTime::now_utc(),
        reason: format!(
            "permanent: database refused {HASH} (escaped: {})",
            HASH.replace('/', "\\/")
        ),
    };
    store.audit_dead_letters(&[letter]).await.unwrap();
    let trail = store.trail(uid(1), 10).await.unwrap();
    assert_eq!(
        trail[0].reason.as_deref(),
        Some("permanent: database refused *** (escaped: ***)")
    );
    let stored = "SELECT count(*) FROM audit_trail t WHERE t::text LIKE '%$2%'";
    assert_eq!(count(&store, stored).await, 0);
}

/// `explain` of this release on a database the release before migrated and this one has not
/// yet (`explain` never migrates; the operator's new image beside old workers) shows the
/// lines of `audit_log` instead of failing on the table migration 0008 adds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_before_migration_0008_shows_the_release_before_s_lines() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    for sql in [
        "DROP TABLE audit_trail",
        "DELETE FROM _sqlx_migrations WHERE version = 8",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    let line = ["user.updated", "applied", "fields updated"];
    let received = OffsetDateTime::now_utc();
    old_line(&store, "old-1", "2024-03-01T00:00:00Z", received, line).await;
    let out = env.command(&["explain", &uid(1).to_string(), "--json"]);
    let json = out.ok().json();
    let trail = json["users"][0]["trail"].as_array().unwrap();
    assert_eq!(trail.len(), 1, "{json}");
    assert_eq!(trail[0]["event_id"], "old-1");
}
