//! Delivery-to-commit latency at a light steady rate: the release binary consuming events
//! published one by one, each event's `latency_ms` read from its log line.

use crate::measure::quantile;
use crate::modes::{Events, Expected, spawn, stop};
use crate::setup::{AMQP, QueueWatch, admin, cleanup, preload, publish, settings, tag};
use lapin::{Connection, ConnectionProperties};
use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};
use user_sync::store::Store;

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
