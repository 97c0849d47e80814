//! The settings file through the real binary: a key no setting reads stops it at start.

use crate::support::*;
use std::path::PathBuf;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// A settings file of the test's own, removed when dropped.
struct SettingsFile(PathBuf);

impl SettingsFile {
    fn new(toml: &str) -> Self {
        let name = format!("user-sync-keys-{}.toml", uuid::Uuid::new_v4().simple());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, toml).unwrap();
        Self(path)
    }
}

impl Drop for SettingsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `dlq list` with `toml` as the settings file and a broker port nobody listens on: exit 2
/// when the settings are refused, 1 when they are accepted and the broker is not reached.
async fn dlq_list(toml: &str) -> Run {
    let file = SettingsFile::new(toml);
    let closed = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let mut cmd = binary();
    cmd.env("SERVICE_NAME", "lms")
        .env("RABBITMQ_URL", closed)
        .env("CONFIG_FILE", &file.0)
        .args(["dlq", "list"]);
    run_within(cmd, LIMIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_key_in_the_file_exits_2_naming_the_nearest_setting() {
    let key = "\"0123456789abcdef0123\"";
    let typo = dlq_list(&format!("event_signing_key = {key}\n")).await;
    assert_eq!(typo.code, 2, "{}", typo.text());
    assert_eq!(
        typo.stderr.trim(),
        "user-sync: invalid configuration: CONFIG_FILE: unknown setting \
         `event_signing_key` (did you mean `event_signing_keys`?)"
    );
    let spelt = dlq_list(&format!("event_signing_keys = {key}\n")).await;
    assert_eq!(spelt.code, 1, "{}", spelt.text());
}
