//! One run of a `user-sync` binary's `import` on a database of the benchmark's own: timed
//! from spawn to exit (startup and migrations included), its peak RSS and CPU from the
//! kernel's accounting of the child (`wait4`, not sampling), the CPU of its Postgres
//! backends and of every Postgres process meanwhile, and for a reconcile its passes.

use crate::measure::SystemCpu;
use crate::passes::Passes;
use crate::watch::Watch;
use sqlx::{Connection as _, PgConnection};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const PG: &str = "postgres://postgres@127.0.0.1:5432";
/// Any one import is stopped (and the benchmark fails) after this long.
const LIMIT: Duration = Duration::from_secs(30 * 60);

pub(crate) struct Measured {
    pub secs: f64,
    pub rss_mib: f64,
    /// CPU seconds: the import process (every thread), its Postgres backends, every
    /// Postgres process on the machine (other sessions' included, and the checkpointer's).
    pub cpu: (f64, f64, f64),
    pub passes: Option<Passes>,
    /// What the command printed on stdout (its report).
    pub report: String,
}

pub(crate) async fn admin(sql: &str) -> Result<(), String> {
    let mut c = PgConnection::connect(&format!("{PG}/postgres"))
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query(sql)
        .execute(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    let _ = c.close().await;
    Ok(())
}

pub(crate) fn db_url(db: &str) -> String {
    format!("{PG}/{db}?sslmode=disable")
}

/// Runs `bin import ARGS` against database `db`, in `dir` (so that no `.env` or
/// `user-sync.toml` of the checkout is read), with default settings otherwise.
// std's `Child::wait` cannot report the peak, so the child is reaped by wait4 (`reap`).
#[allow(clippy::zombie_processes)]
pub(crate) async fn import(
    bin: &Path,
    db: &str,
    args: &[&str],
    dir: &Path,
    watch_passes: bool,
) -> Result<Measured, String> {
    let out_path = dir.join(format!("{db}.out"));
    let err_path = dir.join(format!("{db}.err"));
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| e.to_string());
    let mut cmd = Command::new(bin);
    cmd.arg("import")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("SERVICE_NAME", "lms")
        .env("DATABASE_URL", db_url(db))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(file(&out_path)?)
        .stderr(file(&err_path)?);
    let mut watch = Watch::new(db, watch_passes).await?;
    let cpu_before = SystemCpu::now();
    let started = Instant::now();
    let child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
    let pid = child.id() as libc::pid_t;
    let waiter = tokio::task::spawn_blocking(move || reap(pid));
    while !waiter.is_finished() {
        watch.sample(started.elapsed().as_secs_f64()).await;
        if started.elapsed() > LIMIT {
            // SAFETY: our own child, not reaped yet (the waiter has not returned).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, usage, ended) = waiter.await.map_err(|e| e.to_string())??;
    let secs = ended.duration_since(started).as_secs_f64();
    let pg_cpu = SystemCpu::now().since(cpu_before).db;
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let tail: String = stderr.lines().rev().take(20).collect::<Vec<_>>().join("\n");
        return Err(format!(
            "`import {}` on {db}: wait status {status} after {secs:.1} s; stderr (last lines, newest first):\n{tail}",
            args.join(" ")
        ));
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let backends_cpu = watch.backends_cpu();
    let mut passes = watch.close().await;
    if let Some(p) = passes.as_mut() {
        p.end(secs);
    }
    Ok(Measured {
        secs,
        rss_mib: usage.ru_maxrss as f64 / 1024.0,
        cpu: (
            tv(usage.ru_utime) + tv(usage.ru_stime),
            backends_cpu,
            pg_cpu,
        ),
        passes,
        report: std::fs::read_to_string(&out_path).unwrap_or_default(),
    })
}

/// Waits for the child `pid`: its wait status, resource usage (peak RSS in KiB, CPU) and
/// when it was reaped.
fn reap(pid: libc::pid_t) -> Result<(i32, libc::rusage, Instant), String> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 reaps our own child and fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let ended = Instant::now();
    if reaped != pid {
        return Err(format!("wait4({pid}): {}", std::io::Error::last_os_error()));
    }
    Ok((status, usage, ended))
}
