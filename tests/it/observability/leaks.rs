//! No secret leaves the service: a full run of the real binary over every fixture, and
//! the operator's commands over its dead letters, show no password hash and no email
//! unmasked (unless `LOG_PII=true`) and no broker or database password, whatever the log
//! level.

use crate::support::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

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
    for (_, body) in fixtures("valid").into_iter().chain(fixtures("invalid")) {
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
    let invalid = fixtures("invalid");
    for (_, body) in fixtures("valid").iter().chain(&invalid) {
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

/// A debug-level run over every fixture, and the operator's commands over its dead letters,
/// show no password hash, no email unmasked and no broker or database password.
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

/// With LOG_PII=true the logs show emails as they are, and still no password hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_pii_shows_emails_as_they_are() {
    let env = Env::new().await;
    let logs = run_over_fixtures(&env, true).await;
    assert!(logs.contains("\"email\":\"user1@example.com\""), "{logs}");
    assert!(!logs.contains(HASH));
}

/// With `RUST_LOG=info,lapin=trace` (what an operator reaches for when the broker
/// connection misbehaves), the broker password is not in the log, neither as text nor as
/// the byte list lapin prints frames in: lapin's frame tracing, whose `Connection.StartOk`
/// carries the SASL PLAIN response, is capped at debug whatever RUST_LOG asks. The
/// password here is wrong, so the worker keeps trying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logging_never_prints_the_broker_password() {
    let password = "Sup3rSecretPw";
    let creds = broker_credentials();
    let user = creds.split(':').next().unwrap();
    let url = amqp().replacen(&creds, &format!("{user}:{password}"), 1);
    let env = Env::new()
        .await
        .set("rabbitmq_url", &url)
        .set("rust_log", "info,lapin=trace");
    let child = env
        .binary()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let running = Draining::start(child);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let text = running.stop(WAIT).await;
    // lapin's frame tracing is capped (`lapin::frames` would print "StartOk" in the step it
    // waits on, `lapin::io_loop` the frame itself), so "StartOk" is not in the log, nor the
    // password: lapin's trace of the server's `Connection.Start`, just before the login,
    // shows that trace logging is on and reached the login.
    assert!(
        text.contains("Server sent connection::Start"),
        "trace logging is on"
    );
    let bytes: Vec<String> = password.bytes().map(|b| b.to_string()).collect();
    let as_bytes = bytes.join(", ");
    assert!(!text.contains(password), "the password in plain text");
    assert!(
        !text.contains(&as_bytes),
        "the password is in the log as bytes [{as_bytes}]"
    );
}

/// A retry published to a tier an operator deleted comes back unroutable, and the log
/// tells of it without the message: not its email, not its password hash, neither as text
/// nor as bytes (lapin would log a returned message at WARN with its whole body as a byte
/// list).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_returned_by_a_deleted_tier_logs_no_body() {
    let env = Env::new().await;
    env.declare().await;
    let child = env.spawn_consuming(&mut env.binary()).await;
    let topo = env.topology();
    let conn = local().await;
    for (q, _) in &topo.retry_queues {
        delete_queue(&conn, q).await;
    }
    let _ = conn.close(200, "bye".into()).await;
    let p = env.publisher().await;
    p.email_clash().await;
    env.wait_dead_letters(1, "the conflict dead-lettered in the end", WAIT)
        .await;
    let running = Draining::start(child);
    let text = running.stop(WAIT).await;
    let bytes = |s: &str| {
        s.bytes()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    assert!(text.contains("\"decision\":\"retried\""), "{text}");
    assert!(
        !text.contains("user1@example.com"),
        "the email in plain text"
    );
    assert!(
        !text.contains(&bytes("user1@example.com")),
        "the email is in the log as bytes"
    );
    assert!(
        !text.contains(&bytes(HASH)),
        "the password hash is in the log as bytes"
    );
}
