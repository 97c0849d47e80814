//! Hostile bodies: whatever arrives, `decode` answers with an event, an unknown type or a
//! permanent rejection, never a panic, and looks at no more than `max_body` bytes.

use super::*;
use crate::decide;
use crate::membership::Membership;
use proptest::prelude::*;

const ID: &str = "550e8400-e29b-41d4-a716-446655440000";
const HASH: &str = "$2b$12$zF7vDVD5e.4xzmEI05ezE.ruqh5Vux7K3MLMbdsBDCmcd.PIs8L/O";

fn decode_and_plan(body: &[u8]) -> Result<Decoded, Rejection> {
    let decoded = decode(body, "user.updated", DEFAULT_MAX_BODY_BYTES);
    if let Ok(Decoded::Event(e)) = &decoded {
        let m = Membership::new("lms", &["teacher".into()]);
        let _ = decide::plan(e, &m);
    }
    decoded
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        ".{0,40}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from(ID)),
        Just(serde_json::Value::from(HASH)),
        Just(serde_json::Value::from("2024-01-01T00:00:00Z")),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("event_type".to_string()),
                    Just("user_id".to_string()),
                    Just("user".to_string()),
                    Just("timestamp".to_string()),
                    Just("email".to_string()),
                    Just("id".to_string()),
                    Just("password_hash".to_string()),
                    Just("allowed_services_json".to_string()),
                    Just("is_active".to_string()),
                    Just("role".to_string()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_are_classified_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_and_plan(&bytes);
    }

    #[test]
    fn arbitrary_json_is_classified_without_panic(v in arb_json()) {
        let _ = decode_and_plan(v.to_string().as_bytes());
    }

    #[test]
    fn rejections_never_quote_a_hash(v in arb_json()) {
        if let Err(Rejection(why)) = decode_and_plan(v.to_string().as_bytes()) {
            prop_assert!(!why.contains("$2b$"), "{why}");
        }
    }
}

fn event_with(user: serde_json::Value) -> Vec<u8> {
    serde_json::json!({"event_type": "user.created", "user_id": ID, "timestamp": "2024-01-01T00:00:00Z", "user": user})
        .to_string()
        .into_bytes()
}

fn rejected(body: &[u8]) -> String {
    match decode(body, "user.created", DEFAULT_MAX_BODY_BYTES) {
        Err(Rejection(why)) => why,
        other => panic!("accepted: {other:?}"),
    }
}

#[test]
fn each_hostile_shape_is_a_permanent_rejection() {
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    assert!(rejected(deep.as_bytes()).contains("not a valid event object"));

    let huge = "x".repeat(DEFAULT_MAX_BODY_BYTES + 1);
    assert!(rejected(huge.as_bytes()).contains("over the"));

    let long_email = "a".repeat(400) + "@example.com";
    let why = rejected(&event_with(serde_json::json!({"email": long_email})));
    assert!(why.contains("user.email is longer"), "{why}");

    let many: Vec<String> = (0..1000).map(|i| format!("s{i}")).collect();
    let services = serde_json::to_string(&many).unwrap();
    let body = event_with(
        serde_json::json!({"email": "a@example.com", "allowed_services_json": services}),
    );
    assert!(rejected(&body).contains("more than 256 services"));

    let nul = event_with(serde_json::json!({"email": "a\u{0}@example.com"}));
    assert!(rejected(&nul).contains("contains NUL"));

    let invalid_utf8 = [b'{', 0xff, 0xfe, b'}'];
    assert!(rejected(&invalid_utf8).contains("UTF-8"));

    let number = event_with(serde_json::json!({"email": 42}));
    assert!(rejected(&number).contains("user.email is not a string"));

    let event_id_nul = serde_json::json!({"event_type": "user.deleted", "user_id": ID,
        "timestamp": "2024-01-01T00:00:00Z", "event_id": "a\u{0}b"});
    assert!(rejected(event_id_nul.to_string().as_bytes()).contains("event_id"));
}

#[test]
fn debug_output_never_shows_the_hash() {
    let body = event_with(
        serde_json::json!({"email": "a@example.com", "password_hash": HASH,
        "allowed_services_json": "[\"lms\"]"}),
    );
    let Ok(Decoded::Event(e)) = decode(&body, "user.created", DEFAULT_MAX_BODY_BYTES) else {
        panic!("valid");
    };
    let m = Membership::new("lms", &[]);
    let planned = decide::plan(&e, &m);
    for shown in [
        format!("{e:?}"),
        format!("{planned:?}"),
        format!("{:#?}", e.user),
    ] {
        assert!(!shown.contains(HASH) && shown.contains("***"), "{shown}");
    }
}
