//! The modes the benchmark compares: the release binary draining a preloaded queue, an
//! ack-only consumer on the same events, and the binary at a light steady rate.

use crate::measure::{SystemCpu, peak_rss_kib, process_cpu, quantile, self_cpu};
use crate::setup::{AMQP, QueueWatch, admin, cleanup, preload, publish, settings, tag};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use user_sync::decide;
use user_sync::event::decode;
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
}

fn spawn(vars: &[(String, String)], log: &str, stdout: Stdio) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_user-sync"));
    cmd.env_clear().env("RUST_LOG", log).stdout(stdout);
    for (k, v) in vars {
        cmd.env(k.to_uppercase(), v);
    }
    cmd.spawn().unwrap()
}

fn stop(children: &mut [Child]) {
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
    drain_into(mode, events, expected, workers, extra, false).await
}

/// The same drain into a backend's table named by a `[target]` mapping (every field to a
/// column of its own, as in `mapped::DDL`), instead of the service's own table.
pub(crate) async fn drain_mapped(mode: &str, events: &Events, expected: &Expected) -> Row {
    drain_into(mode, events, expected, 1, &[], true).await
}

async fn drain_into(
    mode: &str,
    events: &Events,
    expected: &Expected,
    workers: usize,
    extra: &[(&str, String)],
    mapped: bool,
) -> Row {
    let tag = tag();
    admin(&format!("CREATE DATABASE {tag}")).await;
    let (s, mut vars) = settings(&tag, &tag, extra);
    let store = Store::new(&s).unwrap();
    store.migrate().await.unwrap();
    if mapped {
        vars.push((
            "config_file".into(),
            crate::mapped::prepare(&store, &tag).await,
        ));
    }
    let matches = async |store: &Store| {
        if mapped {
            crate::mapped::matches(store, expected).await
        } else {
            store.states().await.unwrap() == *expected
        }
    };
    preload(&s, events).await;
    let cpu_before = SystemCpu::now();
    let started = Instant::now();
    let mut children: Vec<_> = (0..workers)
        .map(|_| spawn(&vars, "warn", Stdio::null()))
        .collect();
    let want_marks = expected.len() as i64;
    let watch = QueueWatch::new(&s.rabbitmq_queue).await;
    let mut rss = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        for c in &children {
            rss = rss.max(peak_rss_kib(c.id()));
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{mode}: drain took over 15 minutes"
        );
        if watch.counts().await.0 > 0 {
            continue;
        }
        let marks: i64 = sqlx::query_scalar("SELECT count(*) FROM user_watermarks")
            .fetch_one(store.pool())
            .await
            .unwrap_or(0);
        if marks == want_marks && matches(&store).await {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let system = SystemCpu::now().since(cpu_before);
    watch.close().await;
    let worker_cpu: f64 = children.iter().map(|c| process_cpu(c.id())).sum();
    for c in &children {
        rss = rss.max(peak_rss_kib(c.id()));
    }
    stop(&mut children);
    let verified = matches(&store).await;
    store.pool().close().await;
    cleanup(&s, &tag).await;
    Row {
        mode: mode.into(),
        events: events.len(),
        secs,
        rss_mib: Some(rss as f64 / 1024.0),
        verified: Some(verified),
        cpu: (worker_cpu, system.broker, system.db),
    }
}

/// The ceiling: decode and ack (one `multiple` ack per batch), no database.
pub(crate) async fn drain_ack_only(events: &Events) -> Row {
    let tag = tag();
    let (s, _) = settings(&tag, &tag, &[]);
    preload(&s, events).await;
    let cpu_before = (SystemCpu::now(), self_cpu());
    let started = Instant::now();
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(s.prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            s.rabbitmq_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen = 0;
    while seen < events.len() {
        let d = consumer.next().await.unwrap().unwrap();
        let _ = decode(&d.data, d.routing_key.as_str(), s.max_body_bytes).unwrap();
        seen += 1;
        if seen % s.batch_size == 0 || seen == events.len() {
            d.acker
                .ack(lapin::options::BasicAckOptions { multiple: true })
                .await
                .unwrap();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let system = SystemCpu::now().since(cpu_before.0);
    let own = self_cpu() - cpu_before.1;
    let _ = conn.close(200, "bye".into()).await;
    cleanup(&s, &format!("{tag}_none")).await;
    Row {
        mode: "ack-only ceiling (decode + ack, no db)".into(),
        events: events.len(),
        secs,
        rss_mib: None,
        verified: None,
        cpu: (own, system.broker, system.db),
    }
}

/// Delivery-to-commit latency at a light steady rate, in milliseconds, as the binary
/// reports it in each event's log line (`latency_ms`).
pub(crate) struct Latency {
    pub rate: u32,
    pub events: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub verified: bool,
}

/// Publishes `events` one by one at `rate` per second to a running binary.
pub(crate) async fn light_load(events: &Events, expected: &Expected, rate: u32) -> Latency {
    let tag = tag();
    admin(&format!("CREATE DATABASE {tag}")).await;
    let (s, vars) = settings(&tag, &tag, &[]);
    preload(&s, &[]).await;
    let mut child = spawn(&vars, "info", Stdio::piped());
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(ms) = v.get("latency_ms").and_then(|m| m.as_f64()) {
                let _ = tx.send(ms);
            }
        }
    });
    let ready = Instant::now();
    let watch = QueueWatch::new(&s.rabbitmq_queue).await;
    while watch.counts().await.1 == 0 {
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "consumer never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    watch.close().await;
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for (key, body) in events {
        tick.tick().await;
        publish(&ch, &s.rabbitmq_exchange, key, body).await.unwrap();
    }
    let mut samples = Vec::with_capacity(events.len());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while samples.len() < events.len() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ms)) => samples.push(ms),
            _ => panic!(
                "light load: {} of {} events logged",
                samples.len(),
                events.len()
            ),
        }
    }
    let _ = conn.close(200, "bye".into()).await;
    let store = Store::new(&s).unwrap();
    let verified = store.states().await.unwrap() == *expected;
    store.pool().close().await;
    stop(std::slice::from_mut(&mut child));
    cleanup(&s, &tag).await;
    samples.sort_by(f64::total_cmp);
    Latency {
        rate,
        events: samples.len(),
        p50: quantile(&samples, 0.5),
        p99: quantile(&samples, 0.99),
        max: *samples.last().unwrap(),
        verified,
    }
}
