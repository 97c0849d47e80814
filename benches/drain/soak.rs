//! The soak (`DRAIN_ONLY=soak`): `DRAIN_SOAK_EVENTS` (default 1 000 000) events of the
//! drain's kind over `DRAIN_SOAK_USERS` (default 25 000) users, drained by the release
//! binary at its defaults in parts of `DRAIN_SOAK_EVERY` (default 250 000) into one
//! database, and what that leaves in the service's tables after each part: sizes, live
//! and dead tuples, HOT updates, autovacuums (`soak_stats`). Then it waits (at most
//! `DRAIN_SOAK_SETTLE` seconds, default 180) for autovacuum to have nothing left to do.
//!
//! The trail's pruning runs for real: each part stands for half of the default retention
//! (15 days). Rows cannot be dated in the future and the clock cannot be moved, so the
//! part `k` of `P` writes its trail rows dated `15 (P-1-k)` days back (a trigger of the
//! benchmark's on `audit_trail`, replaced between parts while no worker runs, and dropped
//! for the last part) and runs with
//! `AUDIT_RETENTION_DAYS = 30 + 15 (P-1-k)`: exactly a 30-day retention on a clock that
//! moves 15 days per part, the last part at the defaults. The pruner runs when the
//! binary starts; before each part from the third on, the binary starts on the empty
//! queue and the prune of the part two before it is measured alone (its WAL and CPU include
//! the binary's start and stop, which write next to nothing).

use crate::measure::{SystemCpu, peak_rss_kib, process_cpu};
use crate::modes::{Drained, Events, Row, spawn, stop};
use crate::setup::{QueueWatch, admin, cleanup, events_over, expected_for, preload, settings, tag};
use crate::soak_stats::{Snapshot, header, print, print_indexes, settled, snapshot};
use crate::{env_num, wal};
use sqlx::PgPool;
use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};
use user_sync::settings::Settings;
use user_sync::store::Store;

/// Days of the clock per part: half the default retention.
const PART_DAYS: usize = 15;

/// One run of the pruner alone: rows deleted, seconds from the binary's start, its WAL and
/// Postgres CPU.
struct Prune {
    before_part: usize,
    rows: u64,
    secs: f64,
    wal: wal::Wal,
    pg_cpu: f64,
}

struct Soak {
    tag: String,
    parts: usize,
    /// The benchmark's own connection to the soak's database (not named `user-sync`, so
    /// that the binary's backends can be told apart).
    db: PgPool,
    schema: String,
}

impl Soak {
    /// The settings of part `k`: the defaults, the brake on but out of reach (the stream
    /// deletes thousands of users a second), the retention of the part's clock.
    fn settings(&self, k: usize) -> (Settings, Vec<(String, String)>) {
        let days = 2 * PART_DAYS + PART_DAYS * (self.parts - 1 - k);
        let extra = [
            ("deactivation_brake", "4000000000".to_string()),
            ("audit_retention_days", days.to_string()),
        ];
        settings(&self.tag, &self.tag, &extra)
    }

    /// Trail rows written from now on are dated as part `k`'s clock says: the binary writes
    /// `received_at` itself, so a row trigger moves it back (no trigger for the last part).
    async fn date_trail(&self, k: usize) {
        let (days, s) = (PART_DAYS * (self.parts - 1 - k), &self.schema);
        let mut sql = vec![format!(
            "DROP TRIGGER IF EXISTS soak_date ON {s}.audit_trail"
        )];
        if days > 0 {
            sql.push(format!(
                "CREATE OR REPLACE FUNCTION {s}.soak_date() RETURNS trigger LANGUAGE plpgsql \
                 AS $$ BEGIN NEW.received_at := NEW.received_at - make_interval(days => {days}); \
                 RETURN NEW; END $$"
            ));
            sql.push(format!(
                "CREATE TRIGGER soak_date BEFORE INSERT ON {s}.audit_trail \
                 FOR EACH ROW EXECUTE FUNCTION {s}.soak_date()"
            ));
        }
        for statement in sql {
            sqlx::query(&statement).execute(&self.db).await.unwrap();
        }
    }

    async fn snapshot(&self, label: String) -> Snapshot {
        snapshot(&self.db, &self.schema, label).await
    }

    /// Waits until the binary's backends have exited (they send their statistics and WAL
    /// counters as they exit) and two looks at the statistics agree.
    async fn quiet(&self) {
        let started = Instant::now();
        let gone = "SELECT count(*) FROM pg_stat_activity \
                    WHERE datname = current_database() AND application_name = 'user-sync'";
        let mut last = None;
        while started.elapsed() < Duration::from_secs(10) {
            let left: i64 = sqlx::query_scalar(gone).fetch_one(&self.db).await.unwrap();
            let now = crate::soak_stats::counters(&self.db, &self.schema).await;
            if left == 0 && last.as_ref() == Some(&now) {
                return;
            }
            last = Some(now);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("soak: the statistics did not settle within 10 s");
    }
}

pub(crate) async fn run(batch: usize) {
    let n = env_num("DRAIN_SOAK_EVENTS", 1_000_000);
    let users = env_num("DRAIN_SOAK_USERS", 25_000);
    let every = env_num("DRAIN_SOAK_EVERY", 250_000).max(1);
    let all = events_over(n, users);
    let tag = tag();
    admin(&format!("CREATE DATABASE {tag}")).await;
    let (s, _) = settings(&tag, &tag, &[]);
    let store = Store::new(&s).unwrap();
    store.migrate().await.unwrap();
    store.pool().close().await;
    let soak = Soak {
        db: PgPool::connect(&format!("{}/{tag}", crate::setup::pg()))
            .await
            .unwrap(),
        tag,
        parts: all.chunks(every).count(),
        schema: s.database_schema.clone(),
    };
    eprintln!(
        "soak: {n} events over {users} users in {} parts",
        soak.parts
    );
    let mark = wal::mark().await;
    let cpu_before = SystemCpu::now();
    let started = Instant::now();
    let (mut rows, mut prunes, mut snaps) = (Vec::new(), Vec::new(), Vec::new());
    for (k, part) in all.chunks(every).enumerate() {
        let (s, vars) = soak.settings(k);
        soak.date_trail(k).await;
        if k >= 2 {
            prunes.push(prune(&soak, &vars, k + 1).await);
            snaps.push(soak.snapshot(format!("prune before part {}", k + 1)).await);
        }
        let done = k * every + part.len();
        let mode = format!("soak part {} of {} (to {done} events)", k + 1, soak.parts);
        eprintln!("{mode}");
        rows.push(drain_part(&soak, &mode, (&s, &vars), part, &all[..done]).await);
        snaps.push(soak.snapshot(format!("{done} events")).await);
    }
    let limit = env_num("DRAIN_SOAK_SETTLE", 180) as u64;
    snaps.push(settle(&soak, Duration::from_secs(limit)).await);
    let secs = started.elapsed().as_secs_f64();
    let cpu = SystemCpu::now().since(cpu_before);
    let wal = wal::since(&mark).await;
    soak.db.close().await;
    cleanup(&s, &soak.tag).await;

    crate::print_table(&rows.iter().collect::<Vec<_>>(), None);
    println!();
    print_prunes(&prunes);
    println!();
    header();
    snaps.iter().for_each(print);
    println!();
    snaps.iter().for_each(print_indexes);
    println!();
    println!(
        "soak, all of it ({secs:.0} s: drains, prunes, autovacuum, checkpoints, the wait for autovacuum): WAL {:.0} B/event ({} records, {} FPI); Postgres CPU {:.1} us/event",
        wal.bytes / n as f64,
        wal.records,
        wal.fpi,
        cpu.db / n as f64 * 1e6
    );
    let floors = [
        crate::floor::bare_upsert_floor(&all, batch).await,
        crate::floor::once_per_user_floor(&all, batch).await,
    ];
    println!();
    crate::print_table(&floors.iter().collect::<Vec<_>>(), None);
}

/// One part: preloaded, then drained by the release binary from its start until the table
/// is the state of the stream so far.
async fn drain_part(
    soak: &Soak,
    mode: &str,
    (s, vars): (&Settings, &[(String, String)]),
    part: &Events,
    so_far: &Events,
) -> Row {
    let expected = expected_for(so_far);
    let store = &Store::new(s).unwrap();
    preload(s, part).await;
    let mark = wal::mark_here().await;
    let cpu_before = SystemCpu::now();
    let started = Instant::now();
    let mut children = vec![spawn(vars, "warn", Stdio::null())];
    let watch = QueueWatch::new(&s.rabbitmq_queue).await;
    let drained = Drained {
        mode,
        store,
        expected: &expected,
        target_table: false,
        trail_until: None,
    };
    let mut rss = drained.wait(&watch, &children, started).await;
    let secs = started.elapsed().as_secs_f64();
    watch.close().await;
    store.pool().close().await;
    let worker_cpu = process_cpu(children[0].id());
    rss = rss.max(peak_rss_kib(children[0].id()));
    stop(&mut children);
    soak.quiet().await;
    let system = SystemCpu::now().since(cpu_before);
    let wal = wal::since(&mark).await;
    Row {
        mode: mode.into(),
        events: part.len(),
        secs,
        rss_mib: Some(rss as f64 / 1024.0),
        // `wait` returns only once the table is the expected state.
        verified: Some(true),
        cpu: (worker_cpu, system.broker, system.db),
        range: None,
        wal: Some(wal),
    }
}

/// The binary started on the empty queue until its pruner logs what it deleted.
async fn prune(soak: &Soak, vars: &[(String, String)], before_part: usize) -> Prune {
    let mark = wal::mark_here().await;
    let cpu_before = SystemCpu::now();
    let started = Instant::now();
    let log = "warn,user_sync=info,user_sync::pipeline=warn";
    let mut child = spawn(vars, log, Stdio::piped());
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("pruned the audit trail") {
                let _ = tx.send(pruned_rows(&line));
            }
        }
    });
    let rows = tokio::time::timeout(Duration::from_secs(300), rx.recv())
        .await
        .expect("the pruner ran within 5 minutes")
        .unwrap_or(0);
    let secs = started.elapsed().as_secs_f64();
    stop(std::slice::from_mut(&mut child));
    soak.quiet().await;
    let system = SystemCpu::now().since(cpu_before);
    let wal = wal::since(&mark).await;
    Prune {
        before_part,
        rows,
        secs,
        wal,
        pg_cpu: system.db,
    }
}

/// `rows` of the pruner's log line (JSON; the field at the top or under `fields`).
fn pruned_rows(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    let rows = v
        .get("fields")
        .and_then(|f| f.get("rows"))
        .or(v.get("rows"));
    rows.and_then(|r| r.as_u64()).unwrap_or(0)
}

/// Waits until autovacuum has nothing left to do on any table, or `limit`.
async fn settle(soak: &Soak, limit: Duration) -> Snapshot {
    let started = Instant::now();
    loop {
        let secs = started.elapsed().as_secs();
        let snap = soak.snapshot(format!("settled (+{secs} s)")).await;
        if settled(&snap) {
            return snap;
        }
        if started.elapsed() > limit {
            return soak.snapshot(format!("not settled after {secs} s")).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn print_prunes(prunes: &[Prune]) {
    println!(
        "| prune before part | rows deleted | seconds (start to log line) | WAL MiB | WAL B/row | WAL records / FPI | Postgres CPU s | us/row |"
    );
    println!("|---:|---:|---:|---:|---:|---|---:|---:|");
    for p in prunes {
        let per = |x: f64| match p.rows {
            0 => "-".to_string(),
            r => format!("{:.1}", x / r as f64),
        };
        println!(
            "| {} | {} | {:.2} | {:.2} | {} | {} / {} | {:.2} | {} |",
            p.before_part,
            p.rows,
            p.secs,
            p.wal.bytes / (1024.0 * 1024.0),
            per(p.wal.bytes),
            p.wal.records,
            p.wal.fpi,
            p.pg_cpu,
            per(p.pg_cpu * 1e6),
        );
    }
}
