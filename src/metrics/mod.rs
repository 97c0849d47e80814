//! Prometheus metrics, one registry per running service (tests run several side by side).
//! Names follow Prometheus conventions: `user_sync_` prefix, `_total` on counters, base
//! units (seconds). The connection gauges double as the readiness state of `/readyz`.
//! Every series an alert or the dashboard (deploy/) queries is exported from the start
//! (counters at 0), so the first increase after a restart is seen.

mod exported;
mod process;

use crate::decide::Decision;
use crate::disposition::DeadKind;
use process::ProcessCollector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
        // 0.5 ms to ~4 s: from a commit under light load to a batch waiting out an outage.
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let m = Self {
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
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let r = registry.sub_registry_with_prefix("user_sync");
        m.register_flow(r);
        m.register_state(r);
        Self { registry, ..m }
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
