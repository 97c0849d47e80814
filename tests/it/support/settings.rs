//! Settings as an operator writes them: a `[target]` section, a whole settings file.

use super::*;
use config::{Config, File, FileFormat};
use std::time::Duration;
use user_sync::target_table::{TargetSpec, TargetTable};

pub(crate) fn spec_of(toml: &str) -> TargetSpec {
    Config::builder()
        .add_source(File::from_str(toml, FileFormat::Toml))
        .build()
        .unwrap()
        .get("target")
        .unwrap()
}

/// A `[target]` section resolved as the settings file's would be.
pub(crate) fn mapping_of(toml: &str) -> TargetTable {
    TargetTable::resolve(&spec_of(toml)).unwrap()
}

/// The settings file: `toml` in a file of its own, removed on drop.
pub(crate) struct ConfigFile {
    pub(crate) path: std::path::PathBuf,
}

impl ConfigFile {
    pub(crate) fn new(toml: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("user-sync-{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, toml).unwrap();
        Self { path }
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The real binary's `args` with `toml` as its settings file.
pub(crate) async fn with_config(env: &Env, toml: &str, args: &[&str]) -> Run {
    let file = ConfigFile::new(toml);
    let mut cmd = env.binary();
    cmd.env("CONFIG_FILE", &file.path).args(args);
    run_within(cmd, Duration::from_secs(30)).await
}

/// The `[target]` problem lines of a run's stderr.
pub(crate) fn problems(run: &Run) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| l.starts_with("user-sync: [target]"))
        .collect()
}
