//! A backlog of bodies at the size limit, drained by the real binary: its peak RSS stays
//! under the sidecar manifest's memory limit.

use crate::support::{Env, HASH, count, queue_counts, sigterm, wait_for};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use std::time::Duration;

/// The sidecar manifest's `limits.memory` (deploy/kubernetes/sidecar.yaml), in KiB.
const LIMIT_KIB: i64 = 80 * 1024;
/// Enough bodies at the limit to fill today's default window (6000) many times over in
/// bytes; bounded for the broker's disk: 2000 x 254 KiB, about 500 MB through the queue.
const EVENTS: usize = 2000;
/// Just under the default `MAX_BODY_BYTES` (256 KiB): valid, and applied.
const BODY_BYTES: usize = 254 * 1024;

fn user(i: usize) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0000 + i as u128)
}

/// A valid `user.created` for teacher `i`, padded with a field the decoder ignores to
/// `BODY_BYTES`.
fn padded(i: usize) -> Vec<u8> {
    let id = user(i).to_string();
    let mut event = serde_json::json!({
        "event_type": "user.created",
        "user_id": id,
        "user": {
            "id": id,
            "email": format!("flood{i}@example.com"),
            "first_name": "Flood",
            "last_name": format!("User {i}"),
            "password_hash": HASH,
            "role": "teacher",
            "is_active": true,
            "allowed_services_json": "[]",
        },
        "timestamp": "2024-01-01T00:00:00Z",
        "padding": "",
    });
    let bare = serde_json::to_vec(&event).unwrap().len();
    event["padding"] = "x".repeat(BODY_BYTES - bare).into();
    let body = serde_json::to_vec(&event).unwrap();
    assert_eq!(body.len(), BODY_BYTES);
    body
}

/// Publishes every event with the confirms awaited together, not one round trip each.
async fn publish_flood(env: &Env) {
    let p = env.publisher().await;
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(100) {
        let mut confirms = Vec::new();
        for &i in chunk {
            let confirm =
                p.ch.basic_publish(
                    env.broker.exchange.as_str().into(),
                    "user.created".into(),
                    BasicPublishOptions::default(),
                    &padded(i),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap();
            confirms.push(confirm);
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack());
        }
    }
}

/// Reads the process's high-water mark of resident memory (KiB), 0 once it has exited.
fn hwm(pid: u32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Today's defaults (`PREFETCH` 6000) held up to 6000 such bodies, well over a GiB; the
/// byte budget holds the window to what fits under the manifest's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bodies_at_the_limit_stays_under_the_manifest_limit() {
    let env = Env::new().await.set("audit_retention_days", "0");
    env.declare().await;
    publish_flood(&env).await;
    let mut child = env
        .binary()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let store = env.store();
    let mut peak = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        peak = peak.max(hwm(pid));
        if let Some(exit) = child.try_wait().unwrap() {
            panic!("the worker exited early: {exit}; peak RSS {peak} KiB");
        }
        let rows = count(&store, "SELECT count(*) FROM users").await;
        if rows == EVENTS as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{rows} of {EVENTS} applied in 300 s; peak RSS {peak} KiB"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let queue = env.broker.queue.clone();
    wait_for("queue settled", Duration::from_secs(30), || async {
        crate::support::unsettled(&queue) == Some(0)
    })
    .await;
    peak = peak.max(hwm(pid));
    sigterm(&child);
    let exit = child.wait().unwrap();
    assert!(exit.success(), "clean exit after SIGTERM: {exit}");
    let expected: Vec<uuid::Uuid> = (0..EVENTS).map(user).collect();
    let applied: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT auth_user_id FROM users WHERE is_active AND role = 'teacher' ORDER BY auth_user_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(applied, expected, "every event applied");
    let (dead, _) = queue_counts(&env.dlq()).await.unwrap();
    assert_eq!(dead, 0, "nothing dead-lettered");
    eprintln!("peak RSS draining {EVENTS} bodies of {BODY_BYTES} B: {peak} KiB");
    assert!(
        peak < LIMIT_KIB,
        "peak RSS {peak} KiB over the manifest's limit of {LIMIT_KIB} KiB"
    );
}
