//! Where Postgres spends its time, statement by statement (`DRAIN_STATEMENTS=1`): a drain
//! with `pg_stat_statements` reset before it and read after. The server must preload the
//! extension (`shared_preload_libraries`); point `DRAIN_PG` at one that does. Everything
//! the server runs meanwhile is counted, so use a server of its own.
//!
//! Execution time is wall time inside the backend; for these statements, whose pages stay
//! in shared buffers, it is CPU time except for lock waits, which two batches in flight
//! add (depth 1 gives the clean split).

use crate::modes::{Events, Expected, Row, drain_with_worker};
use crate::setup::pg;
use sqlx::{Connection, PgConnection, Row as _};

/// One statement's share, per drained event.
struct Share {
    query: String,
    calls: i64,
    exec_us: f64,
    plan_us: f64,
    rows: f64,
    wal_bytes: f64,
    dirtied: f64,
}

async fn admin() -> PgConnection {
    PgConnection::connect(&format!("{}/postgres", pg()))
        .await
        .unwrap()
}

/// Resets the counters; false when the server does not preload the extension.
async fn reset() -> bool {
    let mut c = admin().await;
    let made = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut c)
        .await;
    made.is_ok()
        && sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&mut c)
            .await
            .is_ok()
}

async fn shares(events: usize) -> Vec<Share> {
    let mut c = admin().await;
    let rows = sqlx::query(
        "SELECT query, calls, total_exec_time, total_plan_time, rows, wal_bytes::float8, \
           shared_blks_dirtied FROM pg_stat_statements ORDER BY total_exec_time DESC",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let per = |v: f64| v / events as f64;
    rows.iter()
        .map(|r| {
            let text: String = r.get(0);
            Share {
                query: text.split_whitespace().collect::<Vec<_>>().join(" "),
                calls: r.get(1),
                exec_us: per(r.get::<f64, _>(2) * 1000.0),
                plan_us: per(r.get::<f64, _>(3) * 1000.0),
                rows: per(r.get::<i64, _>(4) as f64),
                wal_bytes: per(r.get(5)),
                dirtied: per(r.get::<i64, _>(6) as f64),
            }
        })
        .collect()
}

/// Drains with `extra` settings and prints each statement's time per event.
pub(crate) async fn profile(
    name: &str,
    events: &Events,
    expected: &Expected,
    extra: &[(&str, String)],
) -> Option<Row> {
    if !reset().await {
        eprintln!(
            "{name}: pg_stat_statements is not preloaded on {}; skipped",
            pg()
        );
        return None;
    }
    let row = drain_with_worker(name, events, expected, 1, extra).await;
    let shares = shares(events.len()).await;
    let total: f64 = shares.iter().map(|s| s.exec_us + s.plan_us).sum();
    println!("\n{name}: per drained event, {} statements", shares.len());
    println!("| statement | calls | exec us | plan us | rows | WAL bytes | blocks dirtied |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for s in shares
        .iter()
        .filter(|s| s.exec_us + s.plan_us >= total / 200.0)
    {
        let short: String = s.query.chars().take(90).collect();
        println!(
            "| `{short}` | {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.3} |",
            s.calls, s.exec_us, s.plan_us, s.rows, s.wal_bytes, s.dirtied
        );
    }
    let cpu_us = row.cpu.2 / events.len() as f64 * 1e6;
    println!(
        "sum of statement times: {total:.1} us per event; Postgres CPU (all its processes): \
         {cpu_us:.1} us per event"
    );
    Some(row)
}
