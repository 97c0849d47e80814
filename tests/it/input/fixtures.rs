//! The shared fixture events: every valid one decodes, every invalid one is a permanent
//! rejection, dead-lettered without stopping the events behind it.

use crate::support::*;
use std::path::PathBuf;
use std::time::Duration;
use user_sync::event::{DEFAULT_MAX_BODY_BYTES, Decoded, EventKind, decode};

/// Every valid fixture of the shared producer quirks decodes to the event it stands for.
#[test]
fn every_valid_fixture_decodes() {
    let valid = fixtures("valid");
    assert_eq!(valid.len(), 13);
    for (name, body) in valid {
        let decoded = decode(&body, &routing_key(&body), DEFAULT_MAX_BODY_BYTES)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        match (name.as_str(), decoded) {
            ("unknown_event_type.json", Decoded::Unknown { event_type }) => {
                assert_eq!(event_type, "user.password_reset_requested")
            }
            (_, Decoded::Unknown { .. }) => panic!("{name} decoded as unknown"),
            (name, Decoded::Event(e)) => {
                assert_eq!(
                    e.user_id,
                    "550e8400-e29b-41d4-a716-446655440000"
                        .parse::<uuid::Uuid>()
                        .unwrap()
                );
                if name.starts_with("deleted") {
                    assert_eq!(e.kind, EventKind::Deleted);
                }
                if name == "no_event_type_use_routing_key.json" {
                    assert_eq!(e.kind, EventKind::Updated);
                }
                if name == "updated_allowed_null.json" {
                    assert!(e.user.allowed_services.is_empty());
                }
                if name == "updated_allowed_as_array.json" {
                    assert_eq!(e.user.allowed_services, ["lms"]);
                }
                if name == "updated_inactive_upstream.json" {
                    assert!(!e.user.is_active);
                }
                if name == "updated_teacher_no_services.json" {
                    assert_eq!(
                        e.timestamp.unix_timestamp(),
                        1_704_162_600,
                        "08:30+06:00 is 02:30Z"
                    );
                }
                if name == "created_with_event_id.json" {
                    assert_eq!(
                        e.event_id.as_deref(),
                        Some("f47ac10b-58cc-4372-a567-0e02b2c3d479")
                    );
                }
            }
        }
    }
}

/// Every invalid fixture is a permanent rejection whose message names no password hash.
#[test]
fn every_invalid_fixture_is_a_permanent_rejection_that_names_no_hash() {
    let invalid = fixtures("invalid");
    assert_eq!(invalid.len(), 11);
    for (name, body) in invalid {
        let err = decode(&body, &routing_key(&body), DEFAULT_MAX_BODY_BYTES).expect_err(&name);
        assert!(
            !err.0.contains("$2b$") && !err.0.contains("hunter2"),
            "{name}: {err}"
        );
    }
}

/// Every invalid fixture goes to the DLQ byte-for-byte with its headers, and the valid
/// event published after them is still applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_fixtures_are_dead_lettered_and_the_next_event_applies() {
    let env = Env::new().await;
    let worker = env.start().await;
    let publisher = env.publisher().await;
    let invalid = fixtures("invalid");
    for (_, body) in &invalid {
        publisher.publish(&routing_key(body), body).await;
    }
    let valid = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/events/valid/created_student_lms_sat.json"),
    )
    .unwrap();
    publisher.publish("user.created", &valid).await;

    let store = env.store();
    wait_for("valid event applied", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users")
            .fetch_one(store.pool())
            .await
            .is_ok_and(|n| n == 1)
    })
    .await;
    env.wait_dead_letters(
        invalid.len() as u32,
        "all invalid fixtures dead-lettered",
        Duration::from_secs(20),
    )
    .await;
    let dead = env.dead_letters().await;
    let mut bodies: Vec<Vec<u8>> = dead.iter().map(|d| d.data.clone()).collect();
    let mut expected: Vec<Vec<u8>> = invalid.iter().map(|(_, b)| b.clone()).collect();
    bodies.sort();
    expected.sort();
    assert_eq!(bodies, expected, "bodies kept byte-for-byte");
    for d in &dead {
        assert_eq!(header(d, "x-error-kind").as_deref(), Some("permanent"));
        let error = header(d, "x-error").expect("x-error");
        assert!(
            !error.contains("$2b$") && !error.contains("hunter2"),
            "{error}"
        );
        assert!(header(d, "x-first-failed-at").is_some());
        assert_eq!(
            user_sync::headers::header_int(&d.properties, "x-attempts"),
            Some(1)
        );
        assert_eq!(
            d.routing_key.as_str(),
            routing_key(&d.data),
            "routing key kept"
        );
    }
    let hash: Option<String> = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        hash.as_deref(),
        Some(HASH),
        "stored byte-for-byte, never re-hashed"
    );
    worker.stop().await;
}
