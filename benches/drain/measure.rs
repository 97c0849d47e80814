//! Where the time goes: CPU seconds of the broker, Postgres and a process, read from
//! `/proc` before and after a mode; peak RSS; percentiles.

use std::sync::{LazyLock, OnceLock};

/// Kernel clock ticks per second, for the `/proc/*/stat` times.
static TICKS: LazyLock<f64> = LazyLock::new(|| {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
});

/// One process's line of `/proc/*/stat`: its name, parent, own CPU seconds (utime +
/// stime) and its waited-for children's (cutime + cstime).
struct Stat {
    name: String,
    ppid: u32,
    own: f64,
    children: f64,
}

fn stat(pid: &str) -> Option<Stat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let name = s[open + 1..close].to_string();
    // Fields after the name start at field 3 (state); ppid is field 4, utime field 14.
    let fields: Vec<&str> = s[close + 2..].split_whitespace().collect();
    let f: Vec<f64> = fields
        .iter()
        .skip(11)
        .take(4)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    if f.len() < 4 {
        return None;
    }
    Some(Stat {
        name,
        ppid: fields.get(1)?.parse().ok()?,
        own: (f[0] + f[1]) / *TICKS,
        children: (f[2] + f[3]) / *TICKS,
    })
}

/// The postmaster of the server the benchmark uses, once found: only its processes count
/// as Postgres, so another cluster on the machine (a profiling one, say) is left out.
static POSTMASTER: OnceLock<u32> = OnceLock::new();

/// Finds the postmaster of the benchmark's server (the parent of a backend of ours). A
/// server on another host is not found, and every local Postgres process counts.
pub(crate) async fn find_postmaster() {
    use sqlx::Connection;
    let url = format!("{}/postgres", crate::setup::pg());
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut c)
        .await
        .unwrap();
    if let Some(s) = stat(&backend.to_string()) {
        let _ = POSTMASTER.set(s.ppid);
    }
    let _ = c.close().await;
}

/// CPU seconds used so far by the broker (beam.smp) and by Postgres (every process of the
/// server, plus what the postmaster collected from backends that have exited).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemCpu {
    pub broker: f64,
    pub db: f64,
}

impl SystemCpu {
    pub(crate) fn now() -> Self {
        let mut cpu = SystemCpu::default();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return cpu;
        };
        for entry in dir.flatten() {
            let pid = entry.file_name().to_string_lossy().to_string();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Some(s) = stat(&pid) else { continue };
            let ours = |s: &Stat| match POSTMASTER.get() {
                None => true,
                Some(&pm) => s.ppid == pm || pid == pm.to_string(),
            };
            if s.name == "beam.smp" {
                cpu.broker += s.own;
            } else if s.name.starts_with("postgres") && ours(&s) {
                cpu.db += s.own + s.children;
            }
        }
        cpu
    }

    pub(crate) fn since(self, before: SystemCpu) -> SystemCpu {
        SystemCpu {
            broker: self.broker - before.broker,
            db: self.db - before.db,
        }
    }
}

/// CPU seconds a live process has used.
pub(crate) fn process_cpu(pid: u32) -> f64 {
    stat(&pid.to_string()).map_or(0.0, |s| s.own)
}

pub(crate) fn self_cpu() -> f64 {
    stat("self").map_or(0.0, |s| s.own)
}

/// CPU seconds of this process's children that it has waited for.
pub(crate) fn children_cpu() -> f64 {
    stat("self").map_or(0.0, |s| s.children)
}

/// A `kB` line of `/proc/{pid}/status` (`VmHWM:` peak RSS, `VmRSS:` current), 0 if gone.
pub(crate) fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// The value at quantile `q` (0..=1) of sorted samples, nearest rank.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
