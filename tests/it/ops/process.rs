//! The real binary as a process: configuration errors and a clean SIGTERM.

use crate::support::*;
use std::time::{Duration, Instant};

/// A missing or malformed setting stops the binary with one line naming the variable, never
/// the secret in a URL.
#[test]
fn missing_or_malformed_configuration_names_the_variable() {
    let out = run(binary().env("DATABASE_URL", "postgres://h/db"));
    assert!(!out.success);
    let err = out.stderr;
    assert!(err.contains("SERVICE_NAME"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let out = run(binary()
        .env("SERVICE_NAME", "lms")
        .env("DATABASE_URL", "postgres://u:secret@h/db")
        .env("PREFETCH", "many"));
    let err = out.stderr;
    assert!(err.contains("PREFETCH") && !err.contains("secret"), "{err}");
}

/// SIGTERM stops consuming and exits 0 within seconds, the logs showing no hash and no
/// password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_consuming_and_exits_zero() {
    let env = Env::new().await;
    let mut cmd = env.binary();
    cmd.env("LOG_FORMAT", "json");
    let mut child = env.spawn_consuming(&mut cmd).await;
    let queue = env.broker.queue.clone();
    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    let store = env.store();
    wait_for("applied", Duration::from_secs(20), || async {
        row(&store, 1).await.is_some()
    })
    .await;

    let started = Instant::now();
    sigterm(&child);
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "exit within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "exit 0, got {code:?}");
    assert!(
        queue_counts(&queue)
            .await
            .is_some_and(|(n, c)| n == 0 && c == 0)
    );
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(
        out.contains("\"decision\":\"applied\""),
        "one JSON line per event: {out}"
    );
    assert!(!out.contains("$2b$"), "no hash in logs");
    assert!(!out.contains(&broker_credentials()), "no password in logs");
}
