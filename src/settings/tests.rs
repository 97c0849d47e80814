use super::*;
use crate::broker::Topology;
use crate::redact::mask_url;
use crate::redact::tests::{URLS, leaks};
use std::collections::HashMap;
use std::str::FromStr;

fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|k| map.get(k).cloned())
}

const BASE: &[(&str, &str)] = &[
    ("service_name", "LMS"),
    ("database_url", "postgres://u:pw@db.example.com/app"),
];

#[test]
fn defaults_follow_the_spec() {
    let s = load(BASE).unwrap();
    assert_eq!(s.service_name, "lms");
    assert_eq!(s.rabbitmq_queue, "lms_user_events");
    assert_eq!(Topology::new(&s).dlq, "lms_user_events.dlq");
    assert_eq!(s.rabbitmq_exchange, "user_events");
    assert_eq!(s.rabbitmq_queue_type, QueueType::Quorum);
    assert_eq!(s.database_schema, "user_sync");
    assert_eq!(s.all_access_roles, ["teacher", "curator", "admin"]);
    assert_eq!(s.retry_delays.len(), 3);
    assert_eq!(s.max_attempts, 5);
    assert_eq!(s.max_future_skew, Duration::from_secs(86_400));
    assert_eq!(s.http_addr, "0.0.0.0:8791".parse().unwrap());
    assert_eq!(s.health_stall, Duration::from_secs(60));
}

#[test]
fn errors_name_the_variable() {
    let e = load(&[("database_url", "postgres://x/y")]).unwrap_err();
    assert_eq!(e.var, "SERVICE_NAME");
    let mut bad = BASE.to_vec();
    bad.push(("database_url", "mysql://db.example.com/app"));
    assert_eq!(load(&bad).unwrap_err().var, "DATABASE_URL");
    let mut bad = BASE.to_vec();
    bad.push(("prefetch", "lots"));
    let e = load(&bad).unwrap_err();
    assert_eq!(e.var, "PREFETCH");
    assert!(e.to_string().contains("PREFETCH"));
    let mut bad = BASE.to_vec();
    bad.push(("database_schema", "x; drop table users"));
    assert_eq!(load(&bad).unwrap_err().var, "DATABASE_SCHEMA");
    let mut bad = BASE.to_vec();
    bad.push(("rabbitmq_queue_type", "stream"));
    assert_eq!(load(&bad).unwrap_err().var, "RABBITMQ_QUEUE_TYPE");
    let mut bad = BASE.to_vec();
    bad.push(("max_future_skew_secs", "-1"));
    assert_eq!(load(&bad).unwrap_err().var, "MAX_FUTURE_SKEW_SECS");
}

#[test]
fn only_the_commands_that_use_the_database_need_its_url() {
    let s = load(&[("service_name", "lms")]).expect("no DATABASE_URL is a valid setting");
    let s = Settings {
        command: "explain",
        ..s
    };
    let e = s.database_url().unwrap_err();
    assert_eq!(e.var, "DATABASE_URL");
    assert_eq!(
        e.to_string(),
        "invalid configuration: DATABASE_URL: is required by `user-sync explain`"
    );
    let e = crate::store::Store::new(&s)
        .err()
        .expect("no store without a URL");
    assert!(e.to_string().contains("`user-sync explain`"), "{e}");
    assert!(load(BASE).unwrap().database_url().is_ok());
}

#[test]
fn hostile_identifiers_are_refused_at_start() {
    let cases = [
        (
            "database_schema",
            "users\"; DROP TABLE users; --",
            "DATABASE_SCHEMA",
        ),
        ("database_schema", "Public", "DATABASE_SCHEMA"),
        ("database_schema", "pg_catalog", "DATABASE_SCHEMA"),
        ("database_schema", "information_schema", "DATABASE_SCHEMA"),
        (
            "rabbitmq_queue",
            "q\nx-dead-letter-exchange",
            "RABBITMQ_QUEUE",
        ),
        ("rabbitmq_queue", "q'x", "RABBITMQ_QUEUE"),
        ("rabbitmq_exchange", "amq.topic'", "RABBITMQ_EXCHANGE"),
        ("service_name", "lms sat", "SERVICE_NAME"),
    ];
    for (key, value, var) in cases {
        let mut bad = BASE.to_vec();
        bad.retain(|(k, _)| *k != key);
        bad.push((key, value));
        assert_eq!(load(&bad).unwrap_err().var, var, "{key}={value:?}");
    }
}

fn with_url(url: &str) -> Settings {
    let key = if url.starts_with("amqp") {
        "rabbitmq_url"
    } else {
        "database_url"
    };
    let mut pairs = BASE.to_vec();
    pairs.retain(|(k, _)| *k != key);
    pairs.push((key, url));
    load(&pairs).unwrap()
}

#[test]
fn no_url_form_shows_its_secret_in_debug() {
    for (url, secrets) in URLS {
        let shown = format!("{:?}", with_url(url));
        assert_eq!(leaks(&shown, secrets), None, "{url} -> {shown}");
    }
}

#[tokio::test]
async fn no_url_form_shows_its_secret_in_connection_errors() {
    for (url, secrets) in URLS {
        let settings = with_url(url);
        let text = if url.starts_with("amqp") {
            let e = crate::broker::connect(&settings)
                .await
                .expect_err("nothing listens on port 1");
            format!("{e} {e:?}")
        } else {
            // The pool would wait out its acquire timeout; a direct connection shows
            // the error it wraps, at once.
            use sqlx::ConnectOptions;
            let parsed = crate::store::Store::new(&settings)
                .and_then(|_| sqlx::postgres::PgConnectOptions::from_str(url));
            let e = match parsed {
                Err(e) => e,
                Ok(opts) => opts.connect().await.expect_err("nothing listens on port 1"),
            };
            format!("{e} {e:?}")
        };
        assert_eq!(leaks(&text, secrets), None, "{url} -> {text}");
    }
    let timeout = crate::broker::BrokerError::Timeout(mask_url(URLS[15].0));
    assert_eq!(leaks(&timeout.to_string(), URLS[15].1), None);
}

#[test]
fn secrets_are_masked() {
    let s = load(BASE).unwrap();
    let shown = format!("{s:?}");
    assert!(!shown.contains("pw@"), "{shown}");
    assert!(shown.contains("u:***@db.example.com"));
}

#[test]
fn broker_addresses_and_heartbeat_are_checked_at_start() {
    let s = load(BASE).unwrap();
    assert!(s.rabbitmq_addresses.is_empty());
    assert_eq!(s.rabbitmq_heartbeat_secs, 5);
    let mut pairs = BASE.to_vec();
    pairs.push(("rabbitmq_addresses", " rabbit-1:5672, 10.0.0.2:5673 ,"));
    pairs.push(("rabbitmq_heartbeat_secs", "10"));
    let s = load(&pairs).unwrap();
    let shown: Vec<String> = s.rabbitmq_addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(shown, ["rabbit-1:5672", "10.0.0.2:5673"]);
    assert_eq!(s.rabbitmq_heartbeat_secs, 10);
    assert!(format!("{s:?}").contains("rabbit-1:5672"));

    for (key, value, var) in [
        (
            "rabbitmq_addresses",
            "rabbit-1:5672,rabbit-2",
            "RABBITMQ_ADDRESSES",
        ),
        (
            "rabbitmq_addresses",
            "amqp://guest:guest@rabbit-1:5672",
            "RABBITMQ_ADDRESSES",
        ),
        ("rabbitmq_heartbeat_secs", "0", "RABBITMQ_HEARTBEAT_SECS"),
        ("rabbitmq_heartbeat_secs", "1", "RABBITMQ_HEARTBEAT_SECS"),
        ("rabbitmq_heartbeat_secs", "61", "RABBITMQ_HEARTBEAT_SECS"),
    ] {
        let mut bad = BASE.to_vec();
        bad.push((key, value));
        let e = load(&bad).unwrap_err();
        assert_eq!(e.var, var, "{key}={value:?}");
        assert!(!e.to_string().contains("guest:guest"), "{e}");
    }
}

#[test]
fn the_pool_and_prefetch_follow_the_batches_in_flight() {
    let s = load(BASE).unwrap();
    assert_eq!((s.pipeline_depth, s.database_max_connections), (2, 3));
    assert_eq!(s.prefetch, 6000, "one batch more than are in flight");
    let with = |pairs: &[(&'static str, &'static str)]| {
        let mut all = BASE.to_vec();
        all.extend_from_slice(pairs);
        load(&all)
    };
    let s = with(&[("pipeline_depth", "1")]).unwrap();
    assert_eq!(
        (s.database_max_connections, s.prefetch),
        (2, 4000),
        "depth 1: twice the batch, the default before there was a depth"
    );
    let s = with(&[("batch_size", "10000"), ("pipeline_depth", "8")]).unwrap();
    assert_eq!(s.prefetch, 65_535, "capped at what AMQP can say");
    let s = with(&[("prefetch", "10")]).unwrap();
    assert_eq!(s.prefetch, 10);
    let s = with(&[("pipeline_depth", "4"), ("database_max_connections", "4")]).unwrap();
    assert_eq!((s.pipeline_depth, s.database_max_connections), (4, 4));
    for depth in ["0", "9", "two"] {
        let e = with(&[("pipeline_depth", depth)]).unwrap_err();
        assert_eq!(e.var, "PIPELINE_DEPTH", "{depth}");
    }
    let e = with(&[("pipeline_depth", "3"), ("database_max_connections", "2")]).unwrap_err();
    assert_eq!(e.var, "DATABASE_MAX_CONNECTIONS");
    assert!(e.problem.contains("PIPELINE_DEPTH (3)"), "{}", e.problem);
}

#[test]
fn the_held_bytes_must_hold_one_body_at_the_limit() {
    let s = load(BASE).unwrap();
    assert_eq!(s.max_held_bytes, 16 << 20);
    assert!(s.max_held_bytes >= s.max_body_bytes);
    let small = [BASE, &[("max_held_bytes", "100000")]].concat();
    let e = load(&small).unwrap_err();
    assert_eq!(e.var, "MAX_HELD_BYTES");
    assert!(e.problem.contains("MAX_BODY_BYTES (262144)"), "{e}");
    let fits = [small.as_slice(), &[("max_body_bytes", "65536")]].concat();
    assert_eq!(load(&fits).unwrap().max_held_bytes, 100_000);
}
