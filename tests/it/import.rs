//! `user-sync import` through the real binary against the real database.

use crate::helpers::*;
use std::time::Duration;

fn record(i: u32) -> serde_json::Value {
    let (role, services) = match i % 10 {
        0 => ("teacher", "[]"),
        1..=6 => ("student", "[\"lms\"]"),
        _ => ("student", "[\"sat\"]"),
    };
    serde_json::json!({
        "id": uuid::Uuid::from_u128(0x1000_0000 + i as u128).to_string(),
        "email": format!("import{i}@example.com"),
        "first_name": "Imported",
        "last_name": format!("User {i}"),
        "password_hash": HASH,
        "role": role,
        "is_active": true,
        "allowed_services_json": services,
    })
}

fn import(env: &Env, args: &[&str]) -> Run {
    env.command(&[&["import"], args].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_users_converge_a_rerun_changes_nothing_and_live_events_win() {
    let env = Env::new().await;
    let worker = env.start().await;
    // A live event newer than the export for user 5: the import must not undo it.
    let mut live = serde_json::json!({
        "event_type": "user.updated",
        "user_id": record(5)["id"],
        "user": record(5),
        "timestamp": "2025-06-01T00:00:00Z",
    });
    live["user"]["email"] = "live5@example.com".into();
    env.publisher().await.publish_json(&live).await;
    let store = env.store();
    wait_for("live event applied", Duration::from_secs(20), || async {
        count(&store, "SELECT count(*) FROM users").await == 1
    })
    .await;
    worker.stop().await;

    let dir = std::env::temp_dir().join(format!("usync-import-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("users.jsonl");
    let mut lines: Vec<String> = (0..10_000).map(|i| record(i).to_string()).collect();
    lines[16] = "{not json".into();
    let mut bad_hash = record(99);
    bad_hash["password_hash"] = "plaintext".into();
    lines[99] = bad_hash.to_string();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let path = file.to_str().unwrap();

    let out = import(&env, &[path, "--as-of", "2025-01-01T00:00:00Z", "--json"]);
    assert_eq!(
        out.code, 3,
        "done, but two records were rejected: {}",
        out.stderr
    );
    let s = out.json();
    assert_eq!(s["records"], 10_000);
    let invalid: Vec<u64> = s["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_u64().unwrap())
        .collect();
    assert_eq!(invalid, [17, 100]);
    // Lines 17 and 100 are records 16 (lms) and 99 (sat); record 5 (lms) is stale.
    let lms = (0..10_000u32).filter(|i| i % 10 <= 6).count() as u64;
    assert_eq!(s["outcomes"]["created"].as_u64(), Some(lms - 2));
    assert_eq!(s["outcomes"]["stale"], 1);
    let active = count(&store, "SELECT count(*) FROM users WHERE is_active").await;
    assert_eq!(active as u64, lms - 1);
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE auth_user_id = $1")
        .bind(uuid::Uuid::from_u128(0x1000_0005))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(email, "live5@example.com", "the newer live event stands");

    let Run {
        code, stdout: out, ..
    } = import(&env, &[path, "--as-of", "2025-01-01T00:00:00Z"]);
    assert_eq!(code, 3);
    assert!(out.contains("changed: 0\n"), "{out}");
    let total = count(&store, "SELECT count(*) FROM users").await;
    assert_eq!(total as u64, lms - 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_counts_and_writes_nothing_and_the_summary_reads_plainly() {
    let env = Env::new().await;
    let dir = std::env::temp_dir().join(format!("usync-import-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("users.json");
    let mut with_time = record(1);
    with_time["timestamp"] = "2024-03-01T00:00:00Z".into();
    let no_time = record(2);
    let sat = {
        let mut r = record(8);
        r["timestamp"] = "2024-03-01T00:00:00Z".into();
        r
    };
    let body = serde_json::json!([with_time, no_time, sat]);
    std::fs::write(&file, body.to_string()).unwrap();
    let path = file.to_str().unwrap();

    let Run {
        code, stdout: out, ..
    } = import(&env, &[path, "--dry-run"]);
    assert_eq!(code, 3, "one record was rejected");
    // The non-TTY output, whole: no progress bar, no escape codes.
    assert_eq!(
        out,
        "records: 3\n\
         would change: 1\n  \
           created: 1\n  \
           not-for-this-service: 1\n\
         invalid: 1\n  \
           item 2: no timestamp, and no --as-of given\n\
         dry run: nothing was written\n"
    );
    let store = env.store();
    assert_eq!(count(&store, "SELECT count(*) FROM users").await, 0);
    assert_eq!(
        count(&store, "SELECT count(*) FROM user_watermarks").await,
        0
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[path = "../../benches/import/export.rs"]
mod export;

/// Import reads its export as a stream: ten times the users, the same peak memory. (The
/// in-memory import it replaced peaked at about 6.5 times the file's size.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_memory_does_not_grow_with_the_export() {
    let env = Env::new().await.set("audit_retention_days", "0");
    let store = env.store();
    let dir = std::env::temp_dir().join(format!("usync-rss-{}", env.db.name));
    std::fs::create_dir_all(&dir).unwrap();
    let mut peaks = Vec::new();
    for n in [20_000u64, 200_000] {
        let file = dir.join(format!("{n}.jsonl"));
        export::write_export(&file, n).unwrap();
        let mut cmd = env.binary();
        cmd.args([
            "import",
            file.to_str().unwrap(),
            "--as-of",
            "2024-01-01T00:00:00Z",
        ]);
        let (code, peak) = peak_rss(cmd).await;
        assert_eq!(code, 0, "import of {n} users");
        std::fs::remove_file(&file).unwrap();
        peaks.push(peak);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let rows = count(&store, "SELECT count(*) FROM users").await;
    assert!(rows > 100_000, "the exports were applied: {rows} rows");
    let (small, large) = (peaks[0], peaks[1]);
    assert!(
        large < small + 8 * 1024,
        "peak RSS grew with the export: 20 000 users {small} KiB, 200 000 users {large} KiB"
    );
    eprintln!("peak RSS: 20 000 users {small} KiB, 200 000 users {large} KiB");
}
