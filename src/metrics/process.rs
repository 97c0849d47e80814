//! The process's own series, under their conventional names (no `user_sync_` prefix).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// `process_resident_memory_bytes` and `process_cpu_seconds_total`, read from /proc/self
/// at each scrape (nothing is exported where /proc is missing).
#[derive(Debug)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(usage) = ProcessUsage::read() else {
            return Ok(());
        };
        let rss = ConstGauge::new(usage.resident_bytes);
        let e = encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            rss.metric_type(),
        )?;
        rss.encode(e)?;
        let cpu = ConstCounter::new(usage.cpu_seconds);
        let e = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(e)
    }
}

struct ProcessUsage {
    resident_bytes: f64,
    cpu_seconds: f64,
}

impl ProcessUsage {
    fn read() -> Option<Self> {
        // SAFETY: sysconf only reads a configuration value.
        let (page, ticks) = unsafe {
            (
                libc::sysconf(libc::_SC_PAGESIZE),
                libc::sysconf(libc::_SC_CLK_TCK),
            )
        };
        if page <= 0 || ticks <= 0 {
            return None;
        }
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        Self::parse(&statm, &stat, page as f64, ticks as f64)
    }

    /// statm's second field is the resident pages; stat's utime and stime (fields 14 and
    /// 15) are clock ticks. The command name in stat may hold spaces and parentheses, so
    /// the fields are counted after its last `)`.
    fn parse(statm: &str, stat: &str, page: f64, ticks: f64) -> Option<Self> {
        let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let mut after = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
        // After the name: state is field 3, so utime (14) is the 12th from here.
        let utime: f64 = after.nth(11)?.parse().ok()?;
        let stime: f64 = after.next()?.parse().ok()?;
        Some(Self {
            resident_bytes: pages * page,
            cpu_seconds: (utime + stime) / ticks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_counted_after_the_command_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3";
        let u = ProcessUsage::parse("1000 300 10 1 0 50 0", stat, 4096.0, 100.0).unwrap();
        assert_eq!(u.resident_bytes, 300.0 * 4096.0);
        assert_eq!(u.cpu_seconds, 3.0);
    }
}
