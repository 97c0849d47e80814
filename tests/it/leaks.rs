//! No secret leaves the service: a full run of the real binary over every fixture, and
//! the operator's commands over its dead letters, show no password hash and no email
//! unmasked (unless `LOG_PII=true`) and no broker or database password.

use crate::fixtures::{dir, routing_key};
use crate::helpers::*;
use std::time::Duration;

/// Every string value of `key` anywhere in the fixtures (bodies that are not JSON aside).
fn values(key: &str) -> Vec<String> {
    fn walk(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match v {
                        serde_json::Value::String(s) if k == key && !s.is_empty() => {
                            out.push(s.clone())
                        }
                        _ => walk(v, key, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, key, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (_, body) in dir("valid").into_iter().chain(dir("invalid")) {
        if let Ok(v) = serde_json::from_slice(&body) {
            walk(&v, key, &mut out);
        }
    }
    out
}

async fn run_over_fixtures(env: &Env, log_pii: bool) -> String {
    let mut cmd = env.binary();
    cmd.env("RUST_LOG", "debug")
        .env("LOG_PII", log_pii.to_string());
    let child = env.spawn_consuming(&mut cmd).await;
    let p = env.publisher().await;
    let invalid = dir("invalid");
    for (_, body) in dir("valid").iter().chain(&invalid) {
        p.publish(&routing_key(body), body).await;
    }
    // An email conflict too: its retries and dead letter carry an error text.
    p.email_clash().await;
    let want = invalid.len() as u32 + 1;
    env.wait_dead_letters(want, "every failure dead-lettered", Duration::from_secs(60))
        .await;
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_operator_output_carry_no_hash_and_no_unmasked_email() {
    let env = Env::new().await;
    let logs = run_over_fixtures(&env, false).await;
    let mut hashes = values("password_hash");
    hashes.push(HASH.to_string());
    let mut emails = values("email");
    emails.push("user1@example.com".into());
    assert!(
        logs.contains("\"decision\":\"applied\""),
        "the run logged events"
    );
    assert!(logs.contains("s***@example.com"), "emails appear masked");
    let mut shown = logs.clone();
    for args in [
        &["dlq", "list"][..],
        &["dlq", "list", "--json"],
        &["dlq", "show", "1"],
    ] {
        shown += &env.command(args).stdout;
    }
    for n in 1..=6 {
        shown += &env
            .command(&["dlq", "show", &n.to_string(), "--json"])
            .stdout;
    }
    for hash in &hashes {
        assert!(!shown.contains(hash.as_str()), "a hash leaked");
    }
    for email in &emails {
        assert!(
            !logs.contains(email.as_str()),
            "{email} unmasked in the logs"
        );
    }
    assert!(
        !shown.contains(&broker_credentials()),
        "the broker password leaked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_pii_shows_emails_as_they_are() {
    let env = Env::new().await;
    let logs = run_over_fixtures(&env, true).await;
    assert!(logs.contains("\"email\":\"user1@example.com\""), "{logs}");
    assert!(!logs.contains(HASH));
}
