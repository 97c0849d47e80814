//! The drains the benchmark compares: the release binary draining a preloaded queue (one
//! or two replicas, a target table, a remote database); the ack-only ceiling is in
//! `ceiling`.

use crate::measure::{SystemCpu, peak_rss_kib, process_cpu, self_cpu};
use crate::remote::DelayProxy;
use crate::setup::{QueueWatch, admin, cleanup, pg, pg_addr, preload, settings, tag};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use user_sync::decide;
use user_sync::settings::Settings;
use user_sync::store::Store;

pub(crate) type Events = [(String, Vec<u8>)];
pub(crate) type Expected = BTreeMap<uuid::Uuid, decide::State>;

pub(crate) struct Row {
    pub mode: String,
    pub events: usize,
    pub secs: f64,
    pub rss_mib: Option<f64>,
    pub verified: Option<bool>,
    /// CPU seconds: the consumer (user-sync or the ack-only loop), the broker, Postgres.
    pub cpu: (f64, f64, f64),
    /// The fastest and slowest of the rounds this row is the median of.
    pub range: Option<(f64, f64)>,
    /// The WAL the mode wrote, from a checkpoint on.
    pub wal: Option<crate::wal::Wal>,
}

pub(crate) fn spawn(vars: &[(String, String)], log: &str, stdout: Stdio) -> Child {
    spawn_binary(
        Path::new(env!("CARGO_BIN_EXE_user-sync")),
        vars,
        log,
        stdout,
    )
}

fn spawn_binary(bin: &Path, vars: &[(String, String)], log: &str, stdout: Stdio) -> Child {
    let mut cmd = Command::new(bin);
    cmd.env_clear().env("RUST_LOG", log).stdout(stdout);
    for (k, v) in vars {
        cmd.env(k.to_uppercase(), v);
    }
    cmd.spawn().unwrap()
}

pub(crate) fn stop(children: &mut [Child]) {
    for c in children.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for c in children {
        let _ = c.wait();
    }
}

/// Runs `workers` release binaries over a preloaded queue until the table is the expected
/// state. Polls the queue depth (cheap) and looks at the database only once it is empty,
/// so that the polling does not load Postgres.
pub(crate) async fn drain_with_worker(
    mode: &str,
    events: &Events,
    expected: &Expected,
    workers: usize,
    extra: &[(&str, String)],
) -> Row {
    let how = How {
        workers,
        ..How::default()
    };
    drain_into(mode, events, expected, extra, how).await
}

/// The same drain into a backend's table named by a `[target]` section (every field to a
/// column of its own, as in `target_table::DDL`), instead of the service's own table.
pub(crate) async fn drain_target_table(mode: &str, events: &Events, expected: &Expected) -> Row {
    let how = How {
        target_table: true,
        ..How::default()
    };
    drain_into(mode, events, expected, &[], how).await
}

/// The stream drained once, then again (every event stale or a duplicate): the second
/// drain measured.
pub(crate) async fn drain_replayed(mode: &str, events: &Events, expected: &Expected) -> Row {
    let how = How {
        replay: true,
        ..How::default()
    };
    drain_into(mode, events, expected, &[], how).await
}

/// The same drain with user-sync reaching Postgres through `proxy` (a remote database);
/// the benchmark's own checks connect directly.
pub(crate) async fn drain_remote(
    mode: &str,
    events: &Events,
    expected: &Expected,
    extra: &[(&str, String)],
    proxy: &DelayProxy,
) -> Row {
    let how = How {
        via: Some(proxy.port),
        ..How::default()
    };
    drain_into(mode, events, expected, extra, how).await
}

/// The same drain by another build of user-sync (`DRAIN_BEFORE`, with its own defaults),
/// locally or through `proxy`.
pub(crate) async fn drain_before(
    mode: &str,
    bin: &Path,
    events: &Events,
    expected: &Expected,
    proxy: Option<&DelayProxy>,
) -> Row {
    let how = How {
        via: proxy.map(|p| p.port),
        bin: Some(bin.to_path_buf()),
        ..How::default()
    };
    drain_into(mode, events, expected, &[], how).await
}

/// How a drain runs: how many workers, into a target table or not, through a proxy or not,
/// by this build or another.
struct How {
    workers: usize,
    target_table: bool,
    via: Option<u16>,
    bin: Option<PathBuf>,
    replay: bool,
}

impl Default for How {
    fn default() -> Self {
        How {
            workers: 1,
            target_table: false,
            via: None,
            bin: None,
            replay: false,
        }
    }
}

async fn drain_into(
    mode: &str,
    events: &Events,
    expected: &Expected,
    extra: &[(&str, String)],
    how: How,
) -> Row {
    let tag = tag();
    let (s, vars, store) = prepare(&tag, extra, &how).await;
    let bin = how
        .bin
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_user-sync").into());
    preload(&s, events).await;
    let mut drained = Drained {
        mode,
        store: &store,
        expected,
        target_table: how.target_table,
        trail_until: None,
    };
    if how.replay {
        // The stream once, unmeasured; then the same again, every event stale or a
        // duplicate, until it has left as many trail rows as the first pass.
        let mut first = spawn_workers(&bin, &vars, how.workers, &tag, mode);
        let watch = QueueWatch::new(&s.rabbitmq_queue).await;
        drained.wait(&watch, &first, Instant::now()).await;
        watch.close().await;
        stop(&mut first);
        drained.trail_until = Some(2 * trail_rows(&store).await);
        preload(&s, events).await;
    }
    let mark = crate::wal::mark().await;
    let cpu_before = SystemCpu::now();
    let own_before = self_cpu();
    let started = Instant::now();
    let mut children = spawn_workers(&bin, &vars, how.workers, &tag, mode);
    let watch = QueueWatch::new(&s.rabbitmq_queue).await;
    let mut rss = drained.wait(&watch, &children, started).await;
    let secs = started.elapsed().as_secs_f64();
    let system = SystemCpu::now().since(cpu_before);
    let wal = crate::wal::since(&mark).await;
    if how.via.is_some() {
        // The proxy's threads run in this process, on the same two cores: said, since a
        // real network would not take that CPU from user-sync, the broker and Postgres.
        let own = self_cpu() - own_before;
        eprintln!("{mode}: the delay proxy and the polling used {own:.2} CPU s");
    }
    watch.close().await;
    let worker_cpu: f64 = children.iter().map(|c| process_cpu(c.id())).sum();
    for c in &children {
        rss = rss.max(peak_rss_kib(c.id()));
    }
    stop(&mut children);
    let verified = drained.matches().await;
    store.pool().close().await;
    cleanup(&s, &tag).await;
    Row {
        mode: mode.into(),
        events: events.len(),
        secs,
        rss_mib: Some(rss as f64 / 1024.0),
        verified: Some(verified),
        cpu: (worker_cpu, system.broker, system.db),
        range: None,
        wal: Some(wal),
    }
}

/// A drain's database, migrated (unless another build does it) and with the target table
/// when `how` asks for one; the worker's settings, through the proxy when there is one.
async fn prepare(
    tag: &str,
    extra: &[(&str, String)],
    how: &How,
) -> (Settings, Vec<(String, String)>, Store) {
    admin(&format!("CREATE DATABASE {tag}")).await;
    let (s, mut vars) = settings(tag, tag, extra);
    if let Some(port) = how.via {
        let server = pg().replace(&pg_addr(), &format!("127.0.0.1:{port}"));
        let url = format!("{server}/{tag}?sslmode=disable");
        vars.retain(|(k, _)| k != "database_url");
        vars.push(("database_url".into(), url));
    }
    let store = Store::new(&s).unwrap();
    // Another build migrates for itself: a schema migrated further than it knows would
    // stop it at start.
    if how.bin.is_none() {
        store.migrate().await.unwrap();
    }
    if how.target_table {
        vars.push((
            "config_file".into(),
            crate::target_table::prepare(&store, tag).await,
        ));
    }
    (s, vars, store)
}

/// What a drain waits for: every user's watermark, and the table as expected.
pub(crate) struct Drained<'a> {
    pub mode: &'a str,
    pub store: &'a Store,
    pub expected: &'a Expected,
    pub target_table: bool,
    /// A replay is done when the trail has this many rows.
    pub trail_until: Option<i64>,
}

async fn trail_rows(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_trail")
        .fetch_one(store.pool())
        .await
        .unwrap_or(0)
}

fn spawn_workers(
    bin: &Path,
    vars: &[(String, String)],
    workers: usize,
    tag: &str,
    mode: &str,
) -> Vec<Child> {
    (0..workers)
        .map(|i| match std::env::var("DRAIN_LOG") {
            // `DRAIN_LOG=user_sync=debug`: each drain's log in a file of its own.
            Ok(filter) => {
                let path = std::env::temp_dir().join(format!("{tag}.{i}.log"));
                eprintln!("{mode}: log in {}", path.display());
                let file = std::fs::File::create(path).unwrap();
                spawn_binary(bin, vars, &filter, file.into())
            }
            Err(_) => spawn_binary(bin, vars, "warn", Stdio::null()),
        })
        .collect()
}

impl Drained<'_> {
    async fn matches(&self) -> bool {
        if self.target_table {
            crate::target_table::matches(self.store, self.expected).await
        } else {
            self.store.states().await.unwrap() == *self.expected
        }
    }

    /// Waits until the queue is empty and the table as expected; returns the workers'
    /// peak RSS (KiB) seen meanwhile.
    pub(crate) async fn wait(
        &self,
        watch: &QueueWatch,
        children: &[Child],
        started: Instant,
    ) -> u64 {
        let want_marks = self.expected.len() as i64;
        let mut rss = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            for c in children {
                rss = rss.max(peak_rss_kib(c.id()));
            }
            assert!(
                started.elapsed() < Duration::from_secs(900),
                "{}: drain took over 15 minutes",
                self.mode
            );
            if watch.counts().await.0 > 0 {
                continue;
            }
            if let Some(until) = self.trail_until
                && trail_rows(self.store).await < until
            {
                continue;
            }
            let marks: i64 = sqlx::query_scalar("SELECT count(*) FROM user_watermarks")
                .fetch_one(self.store.pool())
                .await
                .unwrap_or(0);
            if marks == want_marks && self.matches().await {
                break;
            }
        }
        rss
    }
}
