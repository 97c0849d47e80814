//! Drain benchmark: `cargo bench --bench drain` (N=100000 by default; `DRAIN_EVENTS=20000`
//! for a quicker run). Against the local broker and database only (127.0.0.1), in one run:
//! preload N events, time the release binary draining them (startup included) with its
//! peak RSS; time an ack-only consumer (decode and ack, no database) on the same events,
//! the ceiling; time two replicas and the audit trail off; time the integration-guide design (BATCH_SIZE=1,
//! PREFETCH=1) on a sample; measure delivery-to-commit latency at a light steady rate;
//! verify every final table against the expected state; print the figures side by side,
//! with the CPU seconds the consumer, the broker and Postgres spent in each mode.
//!
//! `DRAIN_SWEEP=1` adds one row per BATCH_SIZE/PREFETCH pair (how the defaults were chosen).

mod mapped;
mod measure;
mod modes;
mod setup;

use modes::{Row, drain_ack_only, drain_mapped, drain_with_worker, light_load};
use setup::{events, expected_for};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let n = env_num("DRAIN_EVENTS", 100_000);
    let sample_n = env_num("DRAIN_SAMPLE", 2_000);
    let light_rate = env_num("DRAIN_LIGHT_RATE", 200) as u32;
    let light_secs = env_num("DRAIN_LIGHT_SECS", 10);
    let all = events(n);
    let sample = events(sample_n);
    let light = events(light_rate as usize * light_secs);
    let expected = expected_for(&all);
    eprintln!(
        "drain benchmark: {n} events over {} users; sample {sample_n}; light load {} events at {light_rate}/s",
        expected.len(),
        light.len()
    );

    // First, on a quiet machine: the drains leave checkpoints and autovacuum behind them.
    let latency = light_load(&light, &expected_for(&light), light_rate).await;
    let mut rows = vec![drain_ack_only(&all).await];
    rows.push(drain_with_worker("user-sync, defaults", &all, &expected, 1, &[]).await);
    rows.push(drain_with_worker("user-sync, 2 replicas", &all, &expected, 2, &[]).await);
    let no_trail = &[("audit_retention_days", "0".into())];
    let name = "user-sync, audit trail off";
    rows.push(drain_with_worker(name, &all, &expected, 1, no_trail).await);
    let guide = &[("batch_size", "1".into()), ("prefetch", "1".into())];
    let expected_sample = expected_for(&sample);
    let name = "BATCH_SIZE=1, PREFETCH=1 (sample)";
    rows.push(drain_with_worker(name, &sample, &expected_sample, 1, guide).await);
    let name = "user-sync into a mapped [target] table";
    rows.push(drain_mapped(name, &all, &expected).await);
    if std::env::var("DRAIN_SWEEP").is_ok_and(|v| v == "1") {
        for (batch, prefetch) in [
            (100, 200),
            (250, 500),
            (500, 500),
            (1000, 2000),
            (2000, 4000),
        ] {
            let extra = [
                ("batch_size", batch.to_string()),
                ("prefetch", prefetch.to_string()),
            ];
            let name = format!("BATCH_SIZE={batch}, PREFETCH={prefetch}");
            rows.push(drain_with_worker(&name, &all, &expected, 1, &extra).await);
        }
    }

    print_table(&rows);
    let rate = |r: &Row| r.events as f64 / r.secs;
    println!(
        "\nuser-sync defaults vs integration-guide design: {:.1}x",
        rate(&rows[1]) / rate(&rows[4])
    );
    println!(
        "audit trail on vs off: {:.2} of the drain rate",
        rate(&rows[1]) / rate(&rows[3])
    );
    println!(
        "mapped [target] table vs own table: {:.2} of the drain rate",
        rate(&rows[5]) / rate(&rows[1])
    );
    println!(
        "light load ({} events at {}/s): delivery-to-commit p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; table {}",
        latency.events,
        latency.rate,
        latency.p50,
        latency.p99,
        latency.max,
        if latency.verified {
            "exact"
        } else {
            "MISMATCH"
        }
    );
}

fn print_table(rows: &[Row]) {
    let ceiling = rows[0].events as f64 / rows[0].secs;
    println!(
        "| mode | events | seconds | events/s | ratio to ack-only | peak RSS | table | CPU s: consumer / broker / postgres |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|---|");
    for r in rows {
        let rate = r.events as f64 / r.secs;
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.2} | {} | {} | {:.1} / {:.1} / {:.1} |",
            r.mode,
            r.events,
            r.secs,
            rate,
            rate / ceiling,
            r.rss_mib.map_or("-".into(), |m| format!("{m:.1} MiB")),
            r.verified
                .map_or("-", |v| if v { "exact" } else { "MISMATCH" }),
            r.cpu.0,
            r.cpu.1,
            r.cpu.2,
        );
    }
}
