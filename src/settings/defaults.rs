//! Every setting's default, in one table: what an operator gets without setting anything,
//! with why each throughput default is what it is.

use crate::event::DEFAULT_MAX_BODY_BYTES;

// Defaults for the throughput knobs, chosen with `DRAIN_SWEEP=1 cargo bench --bench drain`
// (the figures: BENCHMARKS.md, Drain, "The sweep that chose batch, depth and prefetch").
// `max_body_bytes` is not here: its default is the decoder's own (see `defaults`).
const DEFAULTS: &[(&str, &str)] = &[
    ("rabbitmq_url", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    ("rabbitmq_exchange", "user_events"),
    ("rabbitmq_queue_type", "quorum"),
    // A node that vanishes without closing the socket (frozen, cut off) is noticed after two
    // missed heartbeats: 10-12.5 s at 5 s. RabbitMQ's docs put false positives below 5 s.
    ("rabbitmq_heartbeat_secs", "5"),
    ("database_schema", "user_sync"),
    // Batches in flight, each on a connection of its own, while one commits. A second
    // batch in flight drains faster than one, locally and through a remote database's round
    // trips; a third gains little more for more memory, more prefetch (what a frozen broker
    // node strands) and a database connection more (same section). `PREFETCH` and
    // `DATABASE_MAX_CONNECTIONS` follow it: see `flow`.
    ("pipeline_depth", "2"),
    ("all_access_roles", "teacher,curator,admin"),
    // Bigger batches collapse more events of one user into one write and pay each
    // transaction's fixed cost less often; past 2000 the drain got slower again and took
    // more memory (same section).
    ("batch_size", "2000"),
    // Bounds the wait only while deliveries trickle in: a batch is flushed as soon as no
    // further delivery is ready, so light load waits for nothing (the light-load latency in
    // BENCHMARKS.md, Drain).
    ("batch_max_wait_ms", "20"),
    // Bodies the prefetch window may hold, in bytes: 64 bodies at the default
    // MAX_BODY_BYTES. With the baseline RSS of a drain at the defaults, it keeps a flood of
    // bodies at the limit under the manifests' 80Mi (the integration test memory::flood).
    ("max_held_bytes", "16777216"),
    ("retry_delays_ms", "1000,10000,60000"),
    ("max_attempts", "5"),
    // Generous for any clock drift; short enough that a mistyped year is refused.
    ("max_future_skew_secs", "86400"),
    // A port of its own: the backend beside it in the Pod shares the network namespace,
    // and 8080, 8000, 3000, 5000 and 9090 are what backends and their tools usually take.
    ("http_addr", "0.0.0.0:8791"),
    // Far above the longest pause between ticks (1 s while waiting), far below "forever":
    // a liveness probe restarts a wedged worker within about a minute.
    ("health_stall_secs", "60"),
    ("log_format", "json"),
    ("log_pii", "false"),
    ("shutdown_timeout_ms", "10000"),
    ("deactivation_brake", "500"),
    ("deactivation_brake_window_s", "300"),
    ("audit_retention_days", "30"),
];

/// Every key's default as text: the table, and the defaults other modules own.
pub(super) fn defaults() -> impl Iterator<Item = (&'static str, String)> {
    let owned = [("max_body_bytes", DEFAULT_MAX_BODY_BYTES.to_string())];
    let table = DEFAULTS
        .iter()
        .map(|(key, value)| (*key, value.to_string()));
    table.chain(owned)
}

/// The default of a (lower-case) key, if it has one.
pub(super) fn default(key: &str) -> Option<String> {
    defaults().find(|d| d.0 == key).map(|d| d.1)
}
