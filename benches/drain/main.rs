//! Drain benchmark: `cargo bench --bench drain` (N=100000 by default; `DRAIN_EVENTS=20000`
//! for a quicker run). Against the local broker and database only (127.0.0.1): preload N
//! events, time the release binary draining them (startup included) with its peak RSS;
//! time an ack-only consumer (decode and ack, no database) on the same events, the
//! ceiling; time one batch in flight, two replicas, the audit trail off, a target table,
//! and a remote database (a proxy delaying each direction by 0.5 ms) at one batch in flight
//! and at the default; time the integration-guide design (BATCH_SIZE=1, PREFETCH=1) on a
//! sample; the floor (the rows alone, one bare upsert per batch); measure delivery-to-commit
//! latency at a light steady rate; verify every final table against the expected state;
//! print the figures side by side, with the CPU seconds the consumer, the broker and
//! Postgres spent in each mode. `DRAIN_ROUNDS` (default 3) rounds over the modes, each row
//! the median.
//!
//! `DRAIN_SWEEP=1` adds one row per BATCH_SIZE/PIPELINE_DEPTH/PREFETCH setting (how the defaults
//! were chosen); `DRAIN_ONLY=key,...` runs only the named modes (light, ceiling, defaults,
//! depth1, replicas, untrailed, guide, target_table, replay, reconcile, reconcile-same,
//! remote1, remote, floor, floor-users, sweep, soak); `DRAIN_RECONCILE_USERS` (default
//! 100000) sizes the reconciles; `soak` (only when named) is described in `soak.rs`. Every mode also reports the WAL it wrote from a `CHECKPOINT` on (`wal`);
//! on a shared server that counts everyone's WAL.
//! `DRAIN_SET=key=value,...` changes settings in every mode. `DRAIN_BEFORE=path` adds the
//! same drain by another build (the release before the pipeline, say), locally and through
//! the proxy (keys `before`, `remote-before`). `DRAIN_STATEMENTS=1` runs only
//! the per-statement profile and the floor (`statements`; needs `pg_stat_statements`
//! preloaded on `DRAIN_PG`). `DRAIN_PG` names another Postgres server (default
//! `postgres://postgres@127.0.0.1:5432`).

mod ceiling;
mod floor;
mod light;
mod measure;
mod modes;
mod reconcile;
mod remote;
mod round;
mod setup;
mod soak;
mod soak_stats;
mod statements;
mod target_table;
mod wal;

use light::{Latency, light_load};
use modes::{Events, Expected, Row};
use setup::{events, expected_for};
use std::time::Duration;

pub(crate) fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

fn rate(r: &Row) -> f64 {
    r.events as f64 / r.secs
}

/// Postgres CPU per event, in microseconds.
fn pg_us(r: &Row) -> f64 {
    r.cpu.2 / r.events as f64 * 1e6
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
    measure::find_postmaster().await;
    let batch = user_sync::settings::Settings::from_lookup(|k| {
        (k == "service_name").then(|| "lms".to_string())
    })
    .unwrap()
    .batch_size;

    if flag("DRAIN_STATEMENTS") {
        return profile_statements(&all, &expected, batch).await;
    }

    // Each mode has a key; `DRAIN_ONLY=defaults,depth1` runs only those (default: all but
    // the sweep, which `DRAIN_SWEEP=1` adds).
    let only = std::env::var("DRAIN_ONLY").ok();
    let wanted = |key: &str| match &only {
        Some(keys) => keys.split(',').any(|k| k.trim() == key),
        None => match key {
            "sweep" => flag("DRAIN_SWEEP"),
            // Minutes long, and meant for a server of its own: only when named.
            "soak" => false,
            _ => true,
        },
    };
    // First, on a quiet machine: the drains leave checkpoints and autovacuum behind them.
    let latency = match wanted("light") {
        true => Some(light_load(&light, &expected_for(&light), light_rate).await),
        false => None,
    };
    let proxy = remote::DelayProxy::start(setup::pg_addr(), Duration::from_micros(500));
    let inputs = round::Inputs {
        all: &all,
        expected: &expected,
        sample: &sample,
        proxy: &proxy,
        batch,
    };
    // Rounds over every mode, interleaved, each row the median of its runs: on a machine
    // whose other users come and go, one run of a mode could fall in a burst of theirs.
    let rounds = env_num("DRAIN_ROUNDS", 3).max(1);
    let mut runs = Vec::new();
    for r in 1..=rounds {
        eprintln!("round {r} of {rounds}");
        runs.extend(round::run(&inputs, &wanted).await);
    }
    let rows = round::medians(runs);
    let get = |key: &str| rows.iter().find(|(k, _)| *k == key).map(|(_, r)| r);
    let listed: Vec<&Row> = rows.iter().map(|(_, r)| r).collect();
    if !listed.is_empty() || latency.is_some() {
        print_table(&listed, get("ceiling"));
        println!();
        print_comparisons(&rows, latency);
    }
    if wanted("soak") {
        println!();
        soak::run(batch).await;
    }
}

/// `DRAIN_STATEMENTS=1`: the per-statement profile at depth 1 and at the default, and the
/// floor.
async fn profile_statements(all: &Events, expected: &Expected, batch: usize) {
    let depth1 = [("pipeline_depth", "1".to_string())];
    let at_1 = "profile, PIPELINE_DEPTH=1";
    let at_1 = statements::profile(at_1, all, expected, &depth1).await;
    let at_default = statements::profile("profile, defaults", all, expected, &[]).await;
    let floor = floor::bare_upsert_floor(all, batch).await;
    let rows: Vec<&Row> = [at_1.as_ref(), at_default.as_ref(), Some(&floor)]
        .into_iter()
        .flatten()
        .collect();
    print_table(&rows, None);
}

/// The modes side by side, as ratios, and the light load's latency.
fn print_comparisons(rows: &[(&str, Row)], latency: Option<Latency>) {
    let get = |key: &str| rows.iter().find(|(k, _)| *k == key).map(|(_, r)| r);
    let ratio = |a: &str, b: &str| Some(rate(get(a)?) / rate(get(b)?));
    if let Some(x) = ratio("defaults", "guide") {
        println!("user-sync defaults vs integration-guide design: {x:.1}x");
    }
    if let Some(x) = ratio("defaults", "depth1") {
        println!("default depth vs PIPELINE_DEPTH=1, local database: {x:.2}x");
    }
    if let Some(x) = ratio("remote", "remote1") {
        println!("default depth vs PIPELINE_DEPTH=1, through the 1 ms proxy: {x:.2}x");
    }
    if let Some(x) = ratio("defaults", "before") {
        println!("defaults vs the release before the pipeline, local database: {x:.2}x");
    }
    if let Some(x) = ratio("remote", "remote-before") {
        println!("defaults vs the release before the pipeline, through the 1 ms proxy: {x:.2}x");
    }
    for key in ["defaults", "depth1", "floor", "floor-users"] {
        if let Some(r) = get(key) {
            println!("Postgres CPU per event, {}: {:.1} us", r.mode, pg_us(r));
        }
    }
    if let Some(x) = ratio("defaults", "untrailed") {
        println!("audit trail on vs off: {x:.2} of the drain rate");
    }
    if let Some(x) = ratio("target_table", "defaults") {
        println!("[target] table vs own table: {x:.2} of the drain rate");
    }
    if let Some(l) = latency {
        let table = if l.verified { "exact" } else { "MISMATCH" };
        println!(
            "light load ({} events at {}/s): delivery-to-commit p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; table {table}",
            l.events, l.rate, l.p50, l.p99, l.max
        );
    }
}

/// The table; the ratio column against `ceiling`, when there is one.
fn print_table(rows: &[&Row], ceiling: Option<&Row>) {
    println!(
        "| mode | events | seconds (median, range) | events/s | ratio to ack-only | peak RSS | table | CPU s: consumer / broker / postgres | Postgres us/event | WAL B/event | WAL records / FPI |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|");
    for r in rows {
        let ratio = ceiling.map_or("-".into(), |c| format!("{:.2}", rate(r) / rate(c)));
        let secs = match r.range {
            Some((lo, hi)) => format!("{:.2} ({lo:.2}-{hi:.2})", r.secs),
            None => format!("{:.2}", r.secs),
        };
        println!(
            "| {} | {} | {secs} | {:.0} | {} | {} | {} | {:.1} / {:.1} / {:.1} | {:.1} | {} | {} |",
            r.mode,
            r.events,
            rate(r),
            ratio,
            r.rss_mib.map_or("-".into(), |m| format!("{m:.1} MiB")),
            r.verified
                .map_or("-", |v| if v { "exact" } else { "MISMATCH" }),
            r.cpu.0,
            r.cpu.1,
            r.cpu.2,
            pg_us(r),
            r.wal
                .as_ref()
                .map_or("-".into(), |w| format!("{:.0}", w.bytes / r.events as f64)),
            r.wal
                .as_ref()
                .map_or("-".into(), |w| format!("{} / {}", w.records, w.fpi)),
        );
        if let Some(w) = &r.wal {
            eprintln!("{}: WAL {}..{}", r.mode, w.range.0, w.range.1);
        }
    }
}
