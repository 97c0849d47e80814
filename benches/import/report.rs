//! The benchmark's output: one markdown table, the ratio to the baseline, the targets of
//! the issue, and where each reconcile's time went.

use crate::run::Measured;

pub(crate) struct Row {
    pub mode: &'static str,
    pub users: u64,
    pub m: Measured,
}

impl Row {
    pub(crate) fn new(mode: &'static str, users: u64, m: Measured) -> Self {
        // The machine's load as the mode ends: on a shared machine, the noise to expect.
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        eprintln!(
            "{mode}, {users} users: {:.2} s, {:.0} users/s, peak RSS {:.1} MiB (load {})",
            m.secs,
            users as f64 / m.secs,
            m.rss_mib,
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        Self { mode, users, m }
    }

    fn rate(&self) -> f64 {
        self.users as f64 / self.m.secs
    }

    fn is_baseline(&self) -> bool {
        self.mode.starts_with("baseline")
    }
}

/// The baseline's row of the same size, if it ran.
fn baseline_of(rows: &[Row], users: u64) -> Option<&Row> {
    rows.iter().find(|r| r.is_baseline() && r.users == users)
}

pub(crate) fn print(rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    println!(
        "| mode | users | seconds | users/s | peak RSS (MiB) | users/s vs baseline | CPU s: import / its backends / all postgres |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let ratio = match baseline_of(rows, r.users) {
            Some(b) if !r.mode.starts_with("reconcile") => format!("{:.2}", r.rate() / b.rate()),
            _ => "-".into(),
        };
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.1} | {} | {:.1} / {:.1} / {:.1} |",
            r.mode,
            r.users,
            r.m.secs,
            r.rate(),
            r.m.rss_mib,
            ratio,
            r.m.cpu.0,
            r.m.cpu.1,
            r.m.cpu.2
        );
    }
    println!();
    for r in rows.iter().filter(|r| r.mode.starts_with("import")) {
        if let Some(b) = baseline_of(rows, r.users) {
            // The target is set at 100 000 users.
            let target = match r.users {
                100_000 => format!(" (target >= 1: {})", met(r.rate() >= b.rate())),
                _ => String::new(),
            };
            println!(
                "- new import vs in-memory baseline, {} users: **{:.2}x** the users/s{target}",
                r.users,
                r.rate() / b.rate(),
            );
        }
    }
    for r in rows.iter().filter(|r| !r.is_baseline()) {
        // The targets are in MB (10^6 bytes): 64 MB is 61.0 MiB.
        let mb = r.m.rss_mib * 1024.0 * 1024.0 / 1e6;
        println!(
            "- {} of {} users: peak RSS {mb:.1} MB (target < 64 MB: {})",
            r.mode,
            r.users,
            met(mb < 64.0)
        );
    }
    for r in rows {
        if let Some(p) = &r.m.passes {
            println!("- {} of {} users, passes: {}", r.mode, r.users, p.summary());
        }
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT MET" }
}
