//! Timestamps the worker cannot store, or that lie too far ahead, are dead-lettered; the
//! future-skew bound is exact.

use super::*;
use crate::support::*;
use std::time::Duration;
use user_sync::event::DEFAULT_MAX_BODY_BYTES;

/// Timestamps Postgres cannot store, or too far in the future, are permanent rejections:
/// dead-lettered, and the worker goes on with the events behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstorable_and_far_future_timestamps_are_dead_lettered_and_the_worker_goes_on() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    // Its UTC form is in year 10000: binding it must not panic the worker.
    p.send(
        "user.created",
        2,
        "9999-12-31T23:59:59-01:00",
        "student",
        &["lms"],
    )
    .await;
    p.send(
        "user.created",
        3,
        "0000-01-01T00:00:00Z",
        "student",
        &["lms"],
    )
    .await;
    // Within the calendar, but it would freeze user 1 until 9998.
    p.send("user.deleted", 1, "9998-01-01T00:00:00Z", "student", &[])
        .await;
    let mut later = event(
        "user.updated",
        1,
        "2024-02-01T00:00:00Z",
        "student",
        &["lms"],
    );
    later["user"]["email"] = "later1@example.com".into();
    p.publish_json(&later).await;

    env.wait_dead_letters(3, "dead letters", WAIT).await;
    let store = env.store();
    wait_for("the next event applied", WAIT, || async {
        row(&store, 1)
            .await
            .is_some_and(|r| r.0 && r.2.as_deref() == Some("later1@example.com"))
    })
    .await;
    for letter in env.dead_letters().await {
        assert_eq!(
            header(&letter, "x-error-kind").as_deref(),
            Some("permanent")
        );
    }
    assert!(row(&store, 2).await.is_none() && row(&store, 3).await.is_none());
    worker.stop().await;
}

/// A timestamp exactly at the future-skew bound is accepted and one a microsecond past it
/// refused; digits below the microsecond are cut first, as they are for storage.
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
