//! The reconcile mode: `user-sync import --full` of an export that changed nothing since
//! the import before it, on `DRAIN_RECONCILE_USERS` users (default 100 000): what a
//! periodic reconcile costs the database when there is nothing to do.

use crate::measure::SystemCpu;
use crate::modes::Row;
use crate::setup::{admin, cleanup, settings, tag};
use crate::wal;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;
use user_sync::store::Store;

#[path = "../import/export.rs"]
mod export;

const IMPORTED_AS_OF: &str = "2024-01-01T00:00:00Z";

/// Imports the export at `IMPORTED_AS_OF`, then measures `import --full` of the same
/// export at `as_of`: the same time (the export already applied) or a later one (a new
/// export of the same users, unchanged).
pub(crate) async fn unchanged_reconcile(
    mode: &str,
    users: u64,
    as_of: &str,
    extra: &[(&str, String)],
) -> Row {
    let tag = tag();
    admin(&format!("CREATE DATABASE {tag}")).await;
    let (s, vars) = settings(&tag, &tag, extra);
    let store = Store::new(&s).unwrap();
    store.migrate().await.unwrap();
    let dir = std::env::temp_dir().join(&tag);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("export.jsonl");
    export::write_export(&file, users).unwrap();
    let file = file.to_str().unwrap();
    run_import(&vars, &dir, &[file, "--as-of", IMPORTED_AS_OF]);
    let mark = wal::mark().await;
    let cpu_before = SystemCpu::now();
    let started = Instant::now();
    let own = run_import(&vars, &dir, &[file, "--full", "--as-of", as_of, "--yes"]);
    let secs = started.elapsed().as_secs_f64();
    let system = SystemCpu::now().since(cpu_before);
    let wal = wal::since(&mark).await;
    store.pool().close().await;
    let _ = std::fs::remove_dir_all(&dir);
    cleanup(&s, &tag).await;
    Row {
        mode: mode.into(),
        events: users as usize,
        secs,
        rss_mib: None,
        verified: None,
        cpu: (own, system.broker, system.db),
        range: None,
        wal: Some(wal),
    }
}

/// Runs `user-sync import ARGS` to completion in `dir`; returns its CPU seconds.
fn run_import(vars: &[(String, String)], dir: &Path, args: &[&str]) -> f64 {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_user-sync"));
    cmd.arg("import")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (k, v) in vars {
        cmd.env(k.to_uppercase(), v);
    }
    let before = crate::measure::children_cpu();
    let status = cmd.status().unwrap();
    assert!(status.success(), "import {args:?}: {status}");
    crate::measure::children_cpu() - before
}
