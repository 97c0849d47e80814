//! `user-sync import`: an export of the auth system's users applied as events dated
//! `--as-of`, and with `--full` the reconcile that also deactivates the users an export
//! leaves out, without undoing any event newer than the export.

mod plain;
mod reading;
mod reconcile;
mod reconcile_brake;
mod reconcile_records;
mod reconcile_setups;

use crate::support::*;
use serde_json::Value;
use std::time::Duration;

/// When the export was taken, and times before and after it.
const T: &str = "2024-06-01T00:00:00Z";
const BEFORE: &str = "2024-01-01T00:00:00Z";
const AFTER: &str = "2024-07-01T00:00:00Z";
const WAIT: Duration = Duration::from_secs(30);
/// What one run of the binary may take.
const LIMIT: Duration = Duration::from_secs(90);

/// User `n`'s record: a student of this service.
fn student(n: u8) -> Value {
    record(n, "student", &["lms"])
}

fn lines(records: &[Value]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

/// A file of this test's own, removed when dropped.
struct Export(std::path::PathBuf);

impl Export {
    fn new(env: &Env, name: &str, bytes: impl AsRef<[u8]>) -> Self {
        let path = std::env::temp_dir().join(format!("{}-{name}.export", env.db.name));
        std::fs::write(&path, bytes).unwrap();
        Export(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `import FILE --full --as-of as_of` plus `extra`, through the real binary.
async fn full(env: &Env, export: &Export, as_of: &str, extra: &[&str]) -> Run {
    let args = [
        &["import", export.path(), "--full", "--as-of", as_of],
        extra,
    ]
    .concat();
    env.command_within(&args, LIMIT).await
}

/// Users `ns` imported as active students of this service at `BEFORE`.
async fn seed(env: &Env, ns: impl IntoIterator<Item = u8>) {
    let records: Vec<Value> = ns.into_iter().map(student).collect();
    let file = Export::new(env, "seed", lines(&records));
    let out = env
        .command_within(&["import", file.path(), "--as-of", BEFORE], LIMIT)
        .await;
    assert_eq!(out.code, 0, "seed: {}", out.text());
}

/// Every user's (active, reason, email, last name), by auth id.
async fn table(store: &user_sync::store::Store) -> Vec<(uuid::Uuid, bool, Option<String>, String)> {
    sqlx::query_as(
        "SELECT auth_user_id, is_active, deactivation_reason, coalesce(last_name, '') \
         FROM users ORDER BY auth_user_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// Waits until the workers have decided `events` events (each leaves one audit row).
async fn drained(store: &user_sync::store::Store, events: i64) {
    wait_for("the events decided", Duration::from_secs(30), || async {
        queue_trail_lines(store).await >= events
    })
    .await;
}
