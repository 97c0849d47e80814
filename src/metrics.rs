//! Prometheus metrics, one registry per running service (tests run several side by side).
//! Names follow Prometheus conventions: `user_sync_` prefix, `_total` on counters, base
//! units (seconds). The connection gauges double as the readiness state of `/readyz`.

use crate::decide::Decision;
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

pub struct Metrics {
    registry: Registry,
    received: Family<EventType, Counter>,
    outcomes: Family<OutcomeLabel, Counter>,
    dead_letters: Family<KindLabel, Counter>,
    batch_size: Histogram,
    latency: Histogram,
    broker_connected: Gauge,
    database_up: Gauge,
    paused: Gauge,
    brake_engaged: Gauge,
    last_applied: Gauge<f64, AtomicU64>,
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
            database_up: Gauge::default(),
            paused: Gauge::default(),
            brake_engaged: Gauge::default(),
            last_applied: Gauge::default(),
            registry: Registry::with_prefix("user_sync"),
        };
        let r = &mut m.registry;
        r.register(
            "events_received",
            "Deliveries taken from the queue, by event type (unknown or unreadable: other)",
            m.received.clone(),
        );
        r.register(
            "events",
            "What became of each delivery: applied, reactivated, deactivated, \
             not-for-this-service, absent, backfilled, stale, ignored, retried, dead-lettered",
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
            "last_applied_event_timestamp_seconds",
            "Unix time at which the last change was committed",
            m.last_applied.clone(),
        );
        m
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

    pub fn applied_now(&self) {
        let now = OffsetDateTime::now_utc();
        self.last_applied
            .set(now.unix_timestamp_nanos() as f64 / 1e9);
    }

    pub fn set_broker_connected(&self, up: bool) {
        self.broker_connected.set(up.into());
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
