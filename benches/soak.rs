//! Soak: `cargo bench --bench soak` (`SOAK_SECS`, default 600; `SOAK_RATE`, default 200
//! events per second). Runs the release binary against the local broker and database at a
//! steady publish rate while every broker connection is closed once a minute and the
//! database refuses connections for 20 s once, halfway; then checks that the table
//! converged to the expected state, that nothing was dead-lettered (the stream has no bad
//! event), and that memory stayed flat (RSS after the first minute against the end).
//! The brake is off: the stream deletes users far faster than any real day does.

#[allow(dead_code)]
#[path = "drain/measure.rs"]
mod measure;
#[allow(dead_code)]
#[path = "drain/setup.rs"]
mod setup;

use lapin::options::ConfirmSelectOptions;
use lapin::{Connection, ConnectionProperties};
use setup::{AMQP, QueueWatch, admin, cleanup, events, expected_for, preload, settings, tag};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use user_sync::store::Store;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    measure::status_kib(pid, "VmRSS:")
}

/// A publisher that survives the broker closing its connection: it reconnects and
/// publishes the event again (a duplicate at worst, which changes nothing).
struct Publisher {
    ch: Option<lapin::Channel>,
    conn: Option<Connection>,
    exchange: String,
    reconnects: u32,
}

impl Publisher {
    async fn publish(&mut self, key: &str, body: &[u8]) {
        loop {
            if self.ch.is_none() {
                let Ok(conn) = Connection::connect(AMQP, ConnectionProperties::default()).await
                else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let ch = conn.create_channel().await.unwrap();
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .unwrap();
                (self.conn, self.ch) = (Some(conn), Some(ch));
                self.reconnects += 1;
            }
            let ch = self.ch.as_ref().unwrap();
            let sent = setup::publish(ch, &self.exchange, key, body).await;
            if let Ok(confirm) = sent
                && confirm.await.is_ok_and(|c| c.is_ack())
            {
                return;
            }
            (self.ch, self.conn) = (None, None);
        }
    }
}

async fn database_connections(db: &str, allow: bool) {
    admin(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS {allow}")).await;
    if !allow {
        admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
        ))
        .await;
    }
}

/// What happened while publishing: the faults injected, and the worker's memory.
struct Publishing {
    took: Duration,
    drops: u32,
    reconnects: u32,
    outage_at: Option<Duration>,
    rss_first_minute: Option<u64>,
    rss_by_minute: Vec<u64>,
    rss_end: u64,
}

/// What the run ends with, beside `Publishing`.
struct Ending {
    events: usize,
    caught_up: Duration,
    converged: bool,
    dead: u32,
    rss_end: u64,
    peak: u64,
}

#[tokio::main]
async fn main() {
    let secs = env_num("SOAK_SECS", 600);
    let rate = env_num("SOAK_RATE", 200);
    let all = events((secs * rate) as usize);
    let expected = expected_for(&all);
    eprintln!(
        "soak: {secs} s at {rate}/s, {} events over {} users",
        all.len(),
        expected.len()
    );

    let db = tag();
    admin(&format!("CREATE DATABASE {db}")).await;
    let (s, vars) = settings(&db, &db, &[("deactivation_brake", "0".into())]);
    preload(&s, &[]).await;
    let mut child = start_worker(&vars, &s.rabbitmq_queue).await;
    let started = Instant::now();
    let publishing = publish_with_faults(&all, rate, &s.rabbitmq_exchange, &db, child.id()).await;

    let store = Store::new(&s).unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let converged = loop {
        if store.states().await.is_ok_and(|st| st == expected) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let caught_up = started.elapsed();
    let watch = QueueWatch::new(&format!("{}.dlq", s.rabbitmq_queue)).await;
    let dead = watch.counts().await.0;
    watch.close().await;
    let ending = Ending {
        events: all.len(),
        caught_up,
        converged,
        dead,
        rss_end: rss_kib(child.id()),
        peak: measure::peak_rss_kib(child.id()),
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    store.pool().close().await;
    cleanup(&s, &db).await;
    report(&publishing, &ending);
    assert!(converged && dead == 0, "soak failed");
}

/// The release binary, once its consumer is registered on `queue`.
async fn start_worker(vars: &[(String, String)], queue: &str) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_user-sync"));
    cmd.env_clear()
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    // Passed through, to compare allocator settings (e.g. MALLOC_ARENA_MAX=2).
    if let Ok(arenas) = std::env::var("MALLOC_ARENA_MAX") {
        cmd.env("MALLOC_ARENA_MAX", arenas);
    }
    for (k, v) in vars {
        cmd.env(k.to_uppercase(), v);
    }
    let child = cmd.spawn().unwrap();
    let watch = QueueWatch::new(queue).await;
    while watch.counts().await.1 == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch.close().await;
    child
}

/// Publishes `all` at `rate` per second, closing every broker connection once a minute and
/// refusing connections to `db` for 20 s from halfway; samples the RSS of `pid`.
async fn publish_with_faults(
    all: &[(String, Vec<u8>)],
    rate: u64,
    exchange: &str,
    db: &str,
    pid: u32,
) -> Publishing {
    let mut publisher = Publisher {
        ch: None,
        conn: None,
        exchange: exchange.to_string(),
        reconnects: 0,
    };
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let (mut drops, mut outage_at, mut rss_first_minute) = (0u32, None, None);
    let mut rss_by_minute = Vec::new();
    for (i, (key, body)) in all.iter().enumerate() {
        tick.tick().await;
        publisher.publish(key, body).await;
        let elapsed = started.elapsed().as_secs();
        if elapsed >= 60 && rss_first_minute.is_none() {
            rss_first_minute = Some(rss_kib(pid));
        }
        if elapsed / 60 > drops as u64 {
            drops += 1;
            rss_by_minute.push(rss_kib(pid) / 1024);
            let _ = Command::new("rabbitmqctl")
                .args(["close_all_connections", "soak: connection drop"])
                .stdout(Stdio::null())
                .status();
        }
        if outage_at.is_none() && i >= all.len() / 2 {
            outage_at = Some(started.elapsed());
            database_connections(db, false).await;
            let db2 = db.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(20)).await;
                database_connections(&db2, true).await;
            });
        }
    }
    Publishing {
        took: started.elapsed(),
        drops,
        reconnects: publisher.reconnects,
        outage_at,
        rss_first_minute,
        rss_by_minute,
        rss_end: rss_kib(pid),
    }
}

fn report(p: &Publishing, e: &Ending) {
    println!("| figure | value |\n|---|---|");
    println!(
        "| events published | {} in {:.0} s |",
        e.events,
        p.took.as_secs_f64()
    );
    println!(
        "| broker connection drops | {} (publisher reconnects: {}) |",
        p.drops, p.reconnects
    );
    println!(
        "| database outage | 20 s from {:.0} s |",
        p.outage_at.map_or(0.0, |d| d.as_secs_f64())
    );
    println!(
        "| caught up | {:.0} s after the start |",
        e.caught_up.as_secs_f64()
    );
    println!(
        "| table | {} |",
        if e.converged { "exact" } else { "MISMATCH" }
    );
    println!("| dead letters | {} (expected 0) |", e.dead);
    println!(
        "| RSS after 1 min / end of publishing / end | {:.1} / {:.1} / {:.1} MiB (peak {:.1}) |",
        p.rss_first_minute.unwrap_or(0) as f64 / 1024.0,
        p.rss_end as f64 / 1024.0,
        e.rss_end as f64 / 1024.0,
        e.peak as f64 / 1024.0
    );
    let minutes: Vec<String> = p.rss_by_minute.iter().map(|m| m.to_string()).collect();
    println!("| RSS at each minute (MiB) | {} |", minutes.join(", "));
}
