use super::*;

fn body(json: &str) -> Result<Decoded, Rejection> {
    decode(json.as_bytes(), "user.updated", DEFAULT_MAX_BODY_BYTES)
}

#[test]
fn naive_and_offset_timestamps_are_utc_instants() {
    let naive = parse_timestamp("2025-12-01T12:00:00.000000").unwrap();
    let zulu = parse_timestamp("2025-12-01T12:00:00Z").unwrap();
    let offset = parse_timestamp("2025-12-01T18:00:00+06:00").unwrap();
    assert_eq!(naive, zulu);
    assert_eq!(offset, zulu);
    let nine = parse_timestamp("2025-12-01T12:00:00.123456789").unwrap();
    assert_eq!(nine.nanosecond(), 123_456_000);
    assert!(parse_timestamp("yesterday at noon").is_err());
    assert!(parse_timestamp("2025-13-01T12:00:00").is_err());
}

#[test]
fn bcrypt_shape_is_checked_without_hashing() {
    let good = "$2b$12$zF7vDVD5e.4xzmEI05ezE.ruqh5Vux7K3MLMbdsBDCmcd.PIs8L/O";
    assert!(check_bcrypt(good).is_ok());
    assert!(check_bcrypt(&good.replace("$2b$12", "$2y$12")).is_ok());
    assert!(check_bcrypt(&good.replace("$2b$12", "$2x$12")).is_err());
    assert!(check_bcrypt(&good.replace("$2b$12", "$2b$03")).is_err());
    assert!(check_bcrypt(&good.replace("$2b$12", "$2b$32")).is_err());
    assert!(check_bcrypt(&good[..59]).is_err());
    assert!(check_bcrypt("hunter2").is_err());
}

#[test]
fn oversized_body_is_rejected_before_parsing() {
    let big = vec![b' '; 300];
    assert!(decode(&big, "user.created", 256).is_err());
}

#[test]
fn rejection_never_quotes_a_hash() {
    let r = body(r#"{"user_id":"550e8400-e29b-41d4-a716-446655440000","timestamp":"2024-01-01T00:00:00Z","user":{"email":"a@example.com","password_hash":"$2b$12$zF7vDVD5e.4xzmEI05ezE.ruqh5Vux7K3MLMbdsBDCmcd.PIs8L/"}}"#)
        .unwrap_err();
    assert!(!r.0.contains("$2b$"), "{r}");
    let r = body(r#"{"user_id":"550e8400-e29b-41d4-a716-446655440000","timestamp":"2024-01-01T00:00:00Z","user":{"email":"a@example.com","is_active":"$2b$12$zF7v"}}"#)
        .unwrap_err();
    assert!(!r.0.contains("$2b$"), "{r}");
}

#[test]
fn allowed_services_forms() {
    assert_eq!(allowed_services(None).unwrap(), Vec::<String>::new());
    assert_eq!(
        allowed_services(Some(Value::Null)).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        allowed_services(Some("".into())).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        allowed_services(Some("[\"lms\"]".into())).unwrap(),
        vec!["lms"]
    );
    assert_eq!(
        allowed_services(Some(serde_json::json!(["lms", "sat"]))).unwrap(),
        vec!["lms", "sat"]
    );
    assert!(allowed_services(Some("{\"a\":1}".into())).is_err());
    assert!(allowed_services(Some(serde_json::json!([1]))).is_err());
    assert!(allowed_services(Some(serde_json::json!(true))).is_err());
}

#[test]
fn deleted_may_carry_only_the_user_id() {
    let d = body(r#"{"event_type":"user.deleted","user_id":"550e8400-e29b-41d4-a716-446655440000","timestamp":"2024-01-04T00:00:00Z"}"#)
        .unwrap();
    let Decoded::Event(e) = d else { panic!() };
    assert_eq!(e.kind, EventKind::Deleted);
    assert!(e.user.email.is_none());
}

fn at(ts: &str) -> String {
    format!(
        r#"{{"user_id":"550e8400-e29b-41d4-a716-446655440000","timestamp":"{ts}","user":{{"email":"a@example.com"}}}}"#
    )
}

#[test]
fn timestamps_outside_years_1_to_9999_utc_are_rejected_not_bound() {
    for ts in [
        "9999-12-31T23:59:59-01:00",
        "9999-12-31T23:59:59.999999-00:01",
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00+00:01",
        "0000-12-31T23:59:59.999999Z",
    ] {
        let r = body(&at(ts)).unwrap_err();
        assert!(r.0.contains("outside years 1-9999"), "{ts}: {r}");
    }
    for ts in [
        "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59+01:00",
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00-01:00",
    ] {
        assert!(body(&at(ts)).is_ok(), "{ts}");
    }
}

#[test]
fn timestamps_past_the_allowed_skew_are_rejected() {
    let now = parse_timestamp("2025-06-01T00:00:00Z").unwrap();
    let rules = Rules {
        latest: Some(now + time::Duration::days(1)),
        ..Rules::lenient(DEFAULT_MAX_BODY_BYTES)
    };
    let check = |ts: &str| decode_with(at(ts).as_bytes(), "user.deleted", &rules);
    assert!(check("2025-06-02T00:00:00Z").is_ok());
    assert!(check("2025-06-01T23:00:00-01:00").is_ok());
    for ts in ["2025-06-02T00:00:00.000001Z", "9998-01-01T00:00:00Z"] {
        let r = check(ts).unwrap_err();
        assert!(r.0.contains("MAX_FUTURE_SKEW_SECS"), "{ts}: {r}");
    }
}

#[test]
fn signed_bodies_must_name_their_type_and_agree_with_the_routing_key() {
    let rules = Rules {
        signed: true,
        ..Rules::lenient(DEFAULT_MAX_BODY_BYTES)
    };
    let untyped = at("2024-01-01T00:00:00Z");
    let typed = untyped.replacen('{', r#"{"event_type":"user.updated","#, 1);
    let r = decode_with(untyped.as_bytes(), "user.deleted", &rules).unwrap_err();
    assert!(r.0.contains("no event_type"), "{r}");
    let r = decode_with(typed.as_bytes(), "user.deleted", &rules).unwrap_err();
    assert!(r.0.contains("differs"), "{r}");
    let Ok(Decoded::Event(e)) = decode_with(typed.as_bytes(), "user.updated", &rules) else {
        panic!("a signed body under its own routing key is accepted");
    };
    assert_eq!(e.kind, EventKind::Updated);
    // Unsigned, the routing key still stands in for a missing type
    // (docs/contract.md#wire-format).
    let Ok(Decoded::Event(e)) = decode(untyped.as_bytes(), "user.deleted", 1 << 20) else {
        panic!("unsigned untyped body");
    };
    assert_eq!(e.kind, EventKind::Deleted);
}

#[test]
fn user_id_may_come_only_inside_user() {
    let d = body(r#"{"event_type":"user.updated","user":{"id":"550e8400-e29b-41d4-a716-446655440000","email":"a@example.com"},"timestamp":"2024-01-04T00:00:00Z"}"#)
        .unwrap();
    assert!(matches!(d, Decoded::Event(_)));
}
