//! What the service exports under `user_sync_`: names and help texts. The names are a
//! contract with the alert rules and the dashboard (deploy/).

use super::{Metrics, VersionLabel};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

impl Metrics {
    /// The build, and what passes through: deliveries, outcomes, batches, latency.
    pub(super) fn register_flow(&self, r: &mut Registry) {
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
            self.received.clone(),
        );
        r.register(
            "events",
            "What became of each delivery: applied, reactivated, deactivated, \
             not-for-this-service, absent, backfilled, unchanged, stale, ignored, retried, dead-lettered",
            self.outcomes.clone(),
        );
        r.register(
            "dead_letters",
            "Deliveries dead-lettered, by kind",
            self.dead_letters.clone(),
        );
        r.register(
            "batch_size",
            "Deliveries per applied batch",
            self.batch_size.clone(),
        );
        r.register(
            "delivery_to_commit_seconds",
            "Time from taking a delivery to the commit of its change",
            self.latency.clone(),
        );
    }

    /// The connections, the pause, the brake and how far the table has got.
    pub(super) fn register_state(&self, r: &mut Registry) {
        r.register(
            "broker_connected",
            "1 while connected to the broker with a consumer registered",
            self.broker_connected.clone(),
        );
        r.register(
            "broker_address",
            "1, labelled with the host:port of the broker node the worker consumes from; \
             no series while disconnected",
            self.broker_address.clone(),
        );
        r.register(
            "database_up",
            "1 while the database answers",
            self.database_up.clone(),
        );
        r.register(
            "paused",
            "1 while consumption is paused for a database outage",
            self.paused.clone(),
        );
        r.register(
            "deactivation_brake_engaged",
            "1 while the mass-deactivation brake holds deactivations back",
            self.brake_engaged.clone(),
        );
        r.register(
            "last_commit_timestamp_seconds",
            "Unix time at which the last batch was committed (0 until the first)",
            self.last_commit.clone(),
        );
        r.register(
            "event_lag_seconds",
            "At the last commit: commit time minus the timestamp of the newest event it \
             applied (how far the table is behind the auth system; kept while idle)",
            self.event_lag.clone(),
        );
        r.register(
            "broker_reconnects",
            "Broker sessions that ended and were opened again",
            self.reconnects.clone(),
        );
    }
}
