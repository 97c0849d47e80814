//! Import benchmark: `cargo bench --bench import`. Against the local Postgres only
//! (127.0.0.1), in one run, on databases of its own (created and dropped), with the release
//! binary. For each size in `IMPORT_SIZES` (default "100000,1000000"), with exports that
//! `export::write_export` generates into a temporary directory:
//!
//! - **import**: `import FILE --as-of T` into an empty database;
//! - **baseline**: the same with the in-memory import it replaced (`baseline`), into a
//!   database of its own (`IMPORT_BASELINE=0` skips it, `all` runs it on every size);
//! - **reconcile**: `import FILE --full --as-of T2 --yes` on the import's database after
//!   1% more users (the next ones of a larger export) were imported too: they are left
//!   out of FILE, so the reconcile deactivates them.
//!
//! Seconds (spawn to exit), users/s, peak RSS and CPU of the child (wait4), the CPU of its
//! Postgres backends (`watch`) and of all of Postgres; every table is checked against
//! counts worked out from the export (`expect`).

mod baseline;
mod expect;
mod export;
#[path = "../drain/measure.rs"]
#[allow(dead_code)]
mod measure;
mod passes;
mod report;
mod run;
mod watch;

/// What the borrowed `measure` reads of the drain benchmark's setup: the one Postgres
/// server both benchmarks use.
mod setup {
    pub(crate) fn pg() -> String {
        "postgres://postgres@127.0.0.1:5432".into()
    }
}

use report::Row;
use run::{Measured, admin};
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use user_sync::membership::Membership;
use user_sync::settings::Settings;

const AS_OF: &str = "2024-01-01T00:00:00Z";
const RECONCILE_AS_OF: &str = "2024-06-01T00:00:00Z";

#[tokio::main]
async fn main() {
    let sizes: Vec<u64> = std::env::var("IMPORT_SIZES")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("IMPORT_SIZES: numbers, comma-separated")
        })
        .collect();
    let new_bin = PathBuf::from(env!("CARGO_BIN_EXE_user-sync"));
    // Built (if need be) before anything is measured, so no build runs beside a mode.
    let old_bin = sizes
        .iter()
        .any(|&n| baseline::wanted(n))
        .then(baseline::binary);
    let dir = std::env::temp_dir().join(format!("usync-import-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut dbs = Vec::new();
    let mut rows = Vec::new();
    let result = bench(
        &sizes,
        &new_bin,
        old_bin.as_deref(),
        &dir,
        &mut dbs,
        &mut rows,
    )
    .await;
    for db in dbs {
        let _ = admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    report::print(&rows);
    if let Err(e) = result {
        panic!("import benchmark FAILED: {e}");
    }
}

async fn bench(
    sizes: &[u64],
    new_bin: &Path,
    old_bin: Option<&Path>,
    dir: &Path,
    dbs: &mut Vec<String>,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let s = Settings::from_lookup(|k| (k == "service_name").then(|| "lms".into())).unwrap();
    let membership = Membership::new(&s.service_name, &s.all_access_roles);
    for &n in sizes {
        let extra = (n / 100).max(1);
        let file = dir.join(format!("{n}.jsonl"));
        let larger = dir.join(format!("{}.jsonl", n + extra));
        let drift = dir.join(format!("{n}-drift.jsonl"));
        export::write_export(&file, n).map_err(|e| e.to_string())?;
        export::write_export(&larger, n + extra).map_err(|e| e.to_string())?;
        // The larger export's user i is the smaller's: its tail is the users left out.
        tail(&larger, n, &drift).map_err(|e| e.to_string())?;
        let (want_import, want_reconcile) = expect::expected(&larger, n, &membership);
        std::fs::remove_file(&larger).map_err(|e| e.to_string())?;
        let size_mb = std::fs::metadata(&file).map_or(0, |m| m.len()) as f64 / 1e6;
        eprintln!("{n} users: export of {size_mb:.0} MB, expected {want_import:?}");
        let f = file.to_str().unwrap();

        let db = fresh(dbs).await?;
        let m = run::import(new_bin, &db, &[f, "--as-of", AS_OF], dir, false).await?;
        expect::check("import", &db, want_import).await?;
        rows.push(Row::new("import (streaming)", n, m));

        if let Some(old) = old_bin.filter(|_| baseline::wanted(n)) {
            let old_db = fresh(dbs).await?;
            let m = run::import(old, &old_db, &[f, "--as-of", AS_OF], dir, false).await?;
            expect::check("baseline import", &old_db, want_import).await?;
            rows.push(Row::new("baseline: in-memory import (908f20c)", n, m));
            drop_db(dbs, &old_db).await?;
        }

        // The drift: 1% more users, then the reconcile with the export that leaves them out.
        let d = drift.to_str().unwrap();
        run::import(new_bin, &db, &[d, "--as-of", AS_OF], dir, false).await?;
        let drifted = expect::Counts {
            active: want_import.active + want_reconcile.absent,
            absent: 0,
            ..want_reconcile
        };
        expect::check("drift", &db, drifted).await?;
        let args = [f, "--full", "--as-of", RECONCILE_AS_OF, "--yes", "--json"];
        let m = run::import(new_bin, &db, &args, dir, true).await?;
        expect::check("reconcile", &db, want_reconcile).await?;
        check_report(&m, n, want_reconcile.absent)?;
        rows.push(Row::new("reconcile (--full, 1% left out)", n, m));
        drop_db(dbs, &db).await?;
        std::fs::remove_file(&file).map_err(|e| e.to_string())?;
        std::fs::remove_file(&drift).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Copies the lines of `from` after the first `skip` into `to`.
fn tail(from: &Path, skip: u64, to: &Path) -> std::io::Result<()> {
    let reader = std::io::BufReader::new(std::fs::File::open(from)?);
    let mut out = BufWriter::new(std::fs::File::create(to)?);
    for line in reader.lines().skip(skip as usize) {
        writeln!(out, "{}", line?)?;
    }
    out.flush()
}

/// The reconcile's own report agrees with the table: every record read, and the users
/// left out deactivated.
fn check_report(m: &Measured, n: u64, absent: i64) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(&m.report)
        .map_err(|e| format!("reconcile report: {e}: {}", m.report))?;
    let deactivated = v["reconcile"]["absent"]["deactivated"]
        .as_i64()
        .unwrap_or(0);
    if v["records"].as_u64() != Some(n) || deactivated != absent {
        return Err(format!(
            "reconcile report: expected {n} records and {absent} deactivated: {v}"
        ));
    }
    Ok(())
}

async fn fresh(dbs: &mut Vec<String>) -> Result<String, String> {
    let db = format!(
        "import_bench_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    admin(&format!("CREATE DATABASE {db}")).await?;
    dbs.push(db.clone());
    Ok(db)
}

async fn drop_db(dbs: &mut Vec<String>, db: &str) -> Result<(), String> {
    admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await?;
    dbs.retain(|d| d != db);
    Ok(())
}
