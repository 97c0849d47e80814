//! Prometheus metrics, one registry per running service (tests run several side by side).
//! Names follow Prometheus conventions: `user_sync_` prefix, `_total` on counters, base
//! units (seconds). The connection gauges double as the readiness state of `/readyz`.
//! Every series an alert or the dashboard (deploy/) queries is exported from the start
//! (counters at 0), so the first increase after a restart is seen.

use crate::decide::Decision;
use crate::disposition::DeadKind;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use time::OffsetDateTime;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventType {
    event_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddressLabel {
    address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
    revision: &'static str,
}

pub struct Metrics {
    registry: Registry,
    received: Family<EventType, Counter>,
    outcomes: Family<OutcomeLabel, Counter>,
    dead_letters: Family<KindLabel, Counter>,
    batch_size: Histogram,
    latency: Histogram,
    broker_connected: Gauge,
    broker_address: Family<AddressLabel, Gauge>,
    database_up: Gauge,
    paused: Gauge,
    brake_engaged: Gauge,
    last_commit: Gauge<f64, AtomicU64>,
    event_lag: Gauge<f64, AtomicU64>,
    reconnects: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let received = Family::<EventType, Counter>::default();
        let outcomes = Family::<OutcomeLabel, Counter>::default();
        let dead_letters = Family::<KindLabel, Counter>::default();
        // 1 to 4096 deliveries: a batch is cut at BATCH_SIZE (at most 10 000).
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        // 0.5 ms to ~4 s: light load commits in about a millisecond, a held batch in seconds.
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let mut m = Self {
            received,
            outcomes,
            dead_letters,
            batch_size,
            latency,
            broker_connected: Gauge::default(),
            broker_address: Family::default(),
            database_up: Gauge::default(),
            paused: Gauge::default(),
            brake_engaged: Gauge::default(),
            last_commit: Gauge::default(),
            event_lag: Gauge::default(),
            reconnects: Counter::default(),
            registry: Registry::default(),
        };
        for kind in DeadKind::ALL {
            let kind = KindLabel {
                kind: kind.as_str(),
            };
            drop(m.dead_letters.get_or_create(&kind));
        }
        m.register_all();
        m
    }

    /// Puts every series in the registry: the process's own under their conventional names,
    /// the service's under `user_sync_`.
    fn register_all(&mut self) {
        let m = self;
        // The process's own series keep their conventional names, without the prefix.
        m.registry.register_collector(Box::new(ProcessCollector));
        let r = m.registry.sub_registry_with_prefix("user_sync");
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
                revision: env!("USER_SYNC_REVISION"),
            })
            .set(1);
        r.register(
            "build_info",
            "Always 1; the labels are the running build's version and git revision",
            build_info,
        );
        r.register(
            "events_received",
            "Deliveries taken from the queue, by event type (unknown or unreadable: other)",
            m.received.clone(),
        );
        r.register(
            "events",
            "What became of each delivery: applied, reactivated, deactivated, \
             not-for-this-service, absent, backfilled, unchanged, stale, ignored, retried, dead-lettered",
            m.outcomes.clone(),
        );
        r.register(
            "dead_letters",
            "Deliveries dead-lettered, by kind",
            m.dead_letters.clone(),
        );
        r.register(
            "batch_size",
            "Deliveries per applied batch",
            m.batch_size.clone(),
        );
        r.register(
            "delivery_to_commit_seconds",
            "Time from taking a delivery to the commit of its change",
            m.latency.clone(),
        );
        r.register(
            "broker_connected",
            "1 while connected to the broker with a consumer registered",
            m.broker_connected.clone(),
        );
        r.register(
            "broker_address",
            "1, labelled with the host:port of the broker node the worker consumes from; \
             no series while disconnected",
            m.broker_address.clone(),
        );
        r.register(
            "database_up",
            "1 while the database answers",
            m.database_up.clone(),
        );
        r.register(
            "paused",
            "1 while consumption is paused for a database outage",
            m.paused.clone(),
        );
        r.register(
            "deactivation_brake_engaged",
            "1 while the mass-deactivation brake holds deactivations back",
            m.brake_engaged.clone(),
        );
        r.register(
            "last_commit_timestamp_seconds",
            "Unix time at which the last batch was committed (0 until the first)",
            m.last_commit.clone(),
        );
        r.register(
            "event_lag_seconds",
            "At the last commit: commit time minus the timestamp of the newest event it \
             applied (how far the table is behind the auth system; kept while idle)",
            m.event_lag.clone(),
        );
        r.register(
            "broker_reconnects",
            "Broker sessions that ended and were opened again",
            m.reconnects.clone(),
        );
    }

    /// The Prometheus/OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    pub fn received(&self, event_type: &str) {
        let event_type = match event_type {
            "user.created" | "user.updated" | "user.deleted" => event_type.to_string(),
            _ => "other".to_string(),
        };
        self.received.get_or_create(&EventType { event_type }).inc();
    }

    pub fn outcome(&self, decision: Decision) {
        let outcome = decision.as_str();
        self.outcomes.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The kind of a dead letter; its outcome is counted by `outcome` like any other.
    pub fn dead_letter_kind(&self, kind: &'static str) {
        self.dead_letters.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn batch(&self, size: usize) {
        self.batch_size.observe(size as f64);
    }

    pub fn committed(&self, latency_s: f64) {
        self.latency.observe(latency_s);
    }

    /// A batch committed; `newest` is the timestamp of the newest event it applied.
    pub fn committed_batch(&self, newest: Option<OffsetDateTime>) {
        let now = OffsetDateTime::now_utc();
        self.last_commit
            .set(now.unix_timestamp_nanos() as f64 / 1e9);
        if let Some(newest) = newest {
            self.event_lag.set((now - newest).as_seconds_f64());
        }
    }

    pub fn broker_reconnect(&self) {
        self.reconnects.inc();
    }

    /// Connected to the node at `address` (`host:port`), or not connected.
    pub fn set_broker_connected(&self, address: Option<String>) {
        self.broker_connected.set(address.is_some().into());
        self.broker_address.clear();
        if let Some(address) = address {
            self.broker_address
                .get_or_create(&AddressLabel { address })
                .set(1);
        }
    }

    pub fn set_database(&self, up: bool) {
        self.database_up.set(up.into());
        self.paused.set((!up).into());
    }

    pub fn set_brake(&self, engaged: bool) {
        self.brake_engaged.set(engaged.into());
    }

    pub fn broker_connected(&self) -> bool {
        self.broker_connected.get() == 1
    }

    pub fn database_up(&self) -> bool {
        self.database_up.get() == 1
    }

    pub fn brake_engaged(&self) -> bool {
        self.brake_engaged.get() == 1
    }
}

/// `process_resident_memory_bytes` and `process_cpu_seconds_total`, read from /proc/self
/// at each scrape (nothing is exported where /proc is missing).
#[derive(Debug)]
struct ProcessCollector;

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
    fn every_dead_letter_kind_and_the_build_are_exported_from_the_start() {
        let text = Metrics::new().render();
        for kind in DeadKind::ALL {
            let line = format!(
                "user_sync_dead_letters_total{{kind=\"{}\"}} 0",
                kind.as_str()
            );
            assert!(text.contains(&line), "{line} missing in\n{text}");
        }
        let build = format!(
            "user_sync_build_info{{version=\"{}\",revision=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            env!("USER_SYNC_REVISION")
        );
        assert!(text.contains(&build), "{text}");
        assert!(
            text.contains("user_sync_broker_reconnects_total 0"),
            "{text}"
        );
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
    }

    #[test]
    fn proc_stat_fields_are_counted_after_the_command_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3";
        let u = ProcessUsage::parse("1000 300 10 1 0 50 0", stat, 4096.0, 100.0).unwrap();
        assert_eq!(u.resident_bytes, 300.0 * 4096.0);
        assert_eq!(u.cpu_seconds, 3.0);
    }

    #[test]
    fn the_broker_address_is_exported_only_while_connected() {
        let m = Metrics::new();
        m.set_broker_connected(Some("10.0.0.1:5672".into()));
        m.set_broker_connected(Some("10.0.0.2:5672".into()));
        let text = m.render();
        assert!(
            text.contains("user_sync_broker_address{address=\"10.0.0.2:5672\"} 1"),
            "{text}"
        );
        assert!(!text.contains("10.0.0.1"), "{text}");
        assert!(text.contains("user_sync_broker_connected 1"), "{text}");
        m.set_broker_connected(None);
        let text = m.render();
        assert!(!text.contains("user_sync_broker_address{"), "{text}");
        assert!(text.contains("user_sync_broker_connected 0"), "{text}");
    }

    #[test]
    fn lag_is_commit_time_minus_the_newest_event() {
        let m = Metrics::new();
        m.committed_batch(Some(
            OffsetDateTime::now_utc() - time::Duration::seconds(90),
        ));
        let lag = m.event_lag.get();
        assert!((90.0..95.0).contains(&lag), "{lag}");
    }
}
