//! The trail's binary COPY against the real server: every shape of line stored as an INSERT
//! binding the same values stores it, a line the database refuses failing only its event
//! and leaving its connection usable, and nothing to write taking no connection.

use super::*;
use crate::support::*;
use time::OffsetDateTime;
use time::macros::datetime;
use user_sync::decide;
use user_sync::pipeline::{Trail, isolate_failures};
use user_sync::store::{Commit, DeadLetterEntry, EventMeta, EventResult, Store};

/// A store of one connection: every statement after a failure meets the connection the
/// failure left behind.
async fn one_connection(env: &Env) -> Store {
    let settings = {
        let mut s = env.settings();
        s.pipeline_depth = 1;
        s.database_max_connections = 1;
        s
    };
    let store = Store::new(&settings).unwrap();
    store.migrate().await.unwrap();
    store
}

fn dead_letter(
    user: u8,
    event_id: Option<&str>,
    ts: OffsetDateTime,
    reason: &str,
) -> DeadLetterEntry {
    DeadLetterEntry {
        user_id: uid(user),
        event_id: event_id.map(Into::into),
        event_type: "user.updated",
        event_ts: ts,
        received_at: ts,
        reason: reason.into(),
    }
}

/// A batch with no dead letters (nearly every batch) records none without a connection:
/// with the pool's connections all held by batches in flight it neither waits for one nor
/// fails.
#[tokio::test]
async fn no_dead_letters_to_record_takes_no_connection() {
    let env = Env::new().await;
    let store = one_connection(&env).await;
    let _in_flight = store.pool().acquire().await.unwrap();
    let recorded =
        tokio::time::timeout(Duration::from_secs(1), store.audit_dead_letters(&[])).await;
    assert!(
        matches!(recorded, Ok(Ok(()))),
        "nothing to record waited for or failed on a connection: {recorded:?}"
    );
}

/// A trigger on `audit_trail` refusing one user's line fails that user's event only (the
/// COPY rolls back with its attempt, the batch is split), and the one connection the pool
/// has is usable after it: not left in COPY mode, for the next attempt, for dead letters
/// refused the same way, and for the next batch.
#[tokio::test]
async fn a_trail_line_the_database_refuses_fails_only_its_event_and_leaves_the_connection_usable() {
    let env = Env::new().await;
    let store = one_connection(&env).await;
    for sql in [
        format!(
            "CREATE FUNCTION refuse_line() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF NEW.auth_user_id = '{}' THEN RAISE EXCEPTION 'line refused'; END IF; \
               RETURN NEW; END $$",
            uid(1)
        ),
        "CREATE TRIGGER refuse_line BEFORE INSERT ON audit_trail FOR EACH ROW \
           EXECUTE FUNCTION refuse_line()"
            .into(),
    ] {
        sqlx::query(&sql).execute(store.pool()).await.unwrap();
    }
    let events: Vec<serde_json::Value> = (1..=4).map(created).collect();
    let planned: Vec<_> = events.iter().map(planned).collect();
    let meta: Vec<EventMeta> = planned
        .iter()
        .map(|_| EventMeta {
            event_id: None,
            event_type: "user.created",
            received_at: OffsetDateTime::now_utc(),
        })
        .collect();
    let trail = Trail {
        service: "lms",
        meta: &meta,
        no_ops: true,
    };
    let (users, losers) = decide::reduce(&planned);
    let mut results = isolate_failures(&store, &planned, &users, &losers, Commit::Yes, Some(trail))
        .await
        .unwrap();
    results.sort_by_key(|(i, _)| *i);
    assert!(
        matches!(&results[0].1, EventResult::Rejected(why) if why.contains("P0001")),
        "{results:?}"
    );
    for (_, r) in &results[1..] {
        assert_eq!(
            *r,
            EventResult::Done(decide::Outcome::Applied),
            "{results:?}"
        );
    }
    let now = OffsetDateTime::now_utc();
    let refused = store
        .audit_dead_letters(&[dead_letter(1, None, now, "x")])
        .await;
    assert!(refused.is_err_and(|e| e.to_string().contains("line refused")));
    store
        .audit_dead_letters(&[dead_letter(2, None, now, "kept")])
        .await
        .unwrap();
    assert!(row(&store, 1).await.is_none());
    let lines = store.trail(uid(2), 10).await.unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(count(&store, "SELECT count(*) FROM audit_trail").await, 4);
}

/// Thousands of lines of every shape (NULLs and values in each column, text with quotes,
/// tabs, newlines, backslashes and any unicode, ids that are and are not canonical UUIDs,
/// times before 2000, far ahead, and between microseconds) are stored as binding the same
/// values in a statement stores them.
#[tokio::test]
async fn lines_of_every_shape_are_stored_as_bound_values_are() {
    let env = Env::new().await;
    let store = env.store();
    store.migrate().await.unwrap();
    let times = [
        datetime!(2024-05-06 7:08:09.123_456_789 UTC),
        datetime!(1999-12-31 23:59:59.999_999_5 UTC),
        datetime!(1970-01-01 0:00 UTC),
        datetime!(1900-02-28 12:00:00.000_000_1 +05:30),
        datetime!(9999-12-31 23:59:59.999_999_999 UTC),
        datetime!(2000-01-01 0:00 UTC),
    ];
    let ids = [
        None,
        Some("6f1c1c55-0e4a-4a8e-9a39-2a1d3c4b5e6f"),
        Some("6F1C1C55-0E4A-4A8E-9A39-2A1D3C4B5E6F"),
        Some("evt-\"42\"\t\\N"),
        Some(""),
    ];
    let reasons = ["", "a \"quoted\",\ttabbed\nline \\ é ✓ 𝄞", "\\.", "\r\n\\N"];
    let entries: Vec<DeadLetterEntry> = (0..5000)
        .map(|n| {
            dead_letter(
                (n % 3) as u8 + 1,
                ids[n % ids.len()],
                times[n % times.len()],
                reasons[n % reasons.len()],
            )
        })
        .collect();
    store.audit_dead_letters(&entries).await.unwrap();
    let stored: Vec<(OffsetDateTime, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT event_ts, coalesce(event_id::text, event_key), reason FROM audit_trail ORDER BY id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(stored.len(), entries.len());
    for (e, (ts, id, reason)) in entries.iter().zip(&stored) {
        let bound: OffsetDateTime = sqlx::query_scalar("SELECT $1::timestamptz")
            .bind(e.event_ts)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(*ts, bound, "{e:?}");
        assert_eq!(id.as_deref(), e.event_id.as_deref(), "{e:?}");
        assert_eq!(reason.as_deref(), Some(e.reason.as_str()), "{e:?}");
    }
}
