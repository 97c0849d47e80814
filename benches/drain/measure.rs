//! Where the time goes: CPU seconds of the broker, Postgres and a process, read from
//! `/proc` before and after a mode; peak RSS; percentiles.

use std::sync::LazyLock;

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

/// (name, utime + stime, cutime + cstime) of one process, in seconds.
fn stat(pid: &str) -> Option<(String, f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let name = s[open + 1..close].to_string();
    // Fields after the name start at field 3 (state); utime is field 14.
    let f: Vec<f64> = s[close + 2..]
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    if f.len() < 4 {
        return None;
    }
    Some((name, (f[0] + f[1]) / *TICKS, (f[2] + f[3]) / *TICKS))
}

/// CPU seconds used so far by the broker (beam.smp) and by Postgres (every server
/// process, plus what the postmaster collected from backends that have exited).
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
            match stat(&pid) {
                Some((name, own, _)) if name == "beam.smp" => cpu.broker += own,
                Some((name, own, children)) if name.starts_with("postgres") => {
                    cpu.db += own + children
                }
                _ => {}
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
    stat(&pid.to_string()).map_or(0.0, |(_, own, _)| own)
}

pub(crate) fn self_cpu() -> f64 {
    stat("self").map_or(0.0, |(_, own, _)| own)
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
