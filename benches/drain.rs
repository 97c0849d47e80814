//! Drain benchmark: `cargo bench --bench drain` (N=100000 by default; `DRAIN_EVENTS=20000`
//! for a quicker run). Against the local broker and database only (127.0.0.1), in one run:
//! preload N events, time the release binary draining them (startup included) with its
//! peak RSS; time an ack-only consumer (decode and ack, no database) on the same events,
//! the ceiling; time the integration-guide design (BATCH_SIZE=1, PREFETCH=1) on a sample;
//! verify every final table against the expected state; print the figures side by side.

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sqlx::{Connection as _, PgConnection};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use user_sync::broker::{Topology, declare};
use user_sync::decide::{self, Planned};
use user_sync::event::{Decoded, decode};
use user_sync::membership::Membership;
use user_sync::settings::Settings;
use user_sync::store::Store;

const PG: &str = "postgres://postgres@127.0.0.1:5432";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const HASH: &str = "$2b$12$zF7vDVD5e.4xzmEI05ezE.ruqh5Vux7K3MLMbdsBDCmcd.PIs8L/O";

/// Deterministic events: creates, updates (some revoking), deletes, over N/4 users, with
/// every tenth event duplicated and neighbouring pairs swapped (out of order).
fn events(n: usize) -> Vec<(String, Vec<u8>)> {
    let users = (n / 4).max(1);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while out.len() < n {
        let r = next();
        let user = (r % users as u64) as u128;
        let kind = match r >> 60 {
            0..=4 => "user.created",
            5..=13 => "user.updated",
            _ => "user.deleted",
        };
        let services = if (r >> 20) % 5 == 0 {
            "[\"sat\"]"
        } else {
            "[\"lms\", \"sat\"]"
        };
        let id = uuid::Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0000 | user);
        let body = serde_json::json!({
            "event_type": kind,
            "user_id": id.to_string(),
            "user": {
                "id": id.to_string(), "email": format!("bench{user}@example.com"),
                "first_name": "Bench", "last_name": format!("User {user}"),
                "password_hash": HASH, "role": "student", "is_active": true,
                "allowed_services_json": services,
            },
            "timestamp": (time::OffsetDateTime::UNIX_EPOCH + Duration::from_millis(1_704_067_200_000 + i as u64)).format(&time::format_description::well_known::Rfc3339).unwrap(),
        });
        let entry = (kind.to_string(), body.to_string().into_bytes());
        if i % 10 == 0 {
            out.push(entry.clone());
        }
        out.push(entry);
        i += 1;
    }
    out.truncate(n);
    for pair in out.chunks_mut(2).step_by(3) {
        pair.reverse();
    }
    out
}

fn settings(db: &str, queue: &str, extra: &[(&str, String)]) -> (Settings, Vec<(String, String)>) {
    let mut vars: HashMap<String, String> = [
        ("service_name", "lms".to_string()),
        ("database_url", format!("{PG}/{db}")),
        ("rabbitmq_url", AMQP.to_string()),
        ("rabbitmq_exchange", format!("{queue}.events")),
        ("rabbitmq_queue", queue.to_string()),
        ("log_format", "json".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.clone());
    }
    let s = Settings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    (s, vars.into_iter().collect())
}

async fn admin(sql: &str) {
    let mut c = PgConnection::connect(&format!("{PG}/postgres"))
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut c).await.unwrap();
}

/// Declares the topology and publishes the events with publisher confirms.
async fn preload(s: &Settings, events: &[(String, Vec<u8>)]) {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    declare(&conn, &Topology::new(s)).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for chunk in events.chunks(5000) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for (key, body) in chunk {
            let confirm = ch
                .basic_publish(
                    s.rabbitmq_exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap();
            confirms.push(confirm);
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack(), "preload confirmed");
        }
    }
    let _ = conn.close(200, "bye".into()).await;
}

async fn queue_depth(queue: &str) -> u32 {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let opts = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let n = ch
        .queue_declare(queue.into(), opts, FieldTable::default())
        .await
        .map(|q| q.message_count())
        .unwrap_or(0);
    let _ = conn.close(200, "bye".into()).await;
    n
}

async fn cleanup(s: &Settings, db: &str) {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let topo = Topology::new(s);
    let mut queues = vec![topo.queue.clone(), topo.dlq.clone()];
    queues.extend(topo.retry_queues.iter().map(|q| q.0.clone()));
    for q in queues {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for e in [topo.exchange, topo.dlx] {
        let _ = ch
            .exchange_delete(e.as_str().into(), Default::default())
            .await;
    }
    let _ = conn.close(200, "bye".into()).await;
    admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        })
        .unwrap_or(0)
}

struct Row {
    mode: String,
    events: usize,
    secs: f64,
    rss_mib: Option<f64>,
    verified: Option<bool>,
}

/// Runs the release binary over a preloaded queue until every event is applied.
async fn drain_with_worker(
    mode: &str,
    events: &[(String, Vec<u8>)],
    expected: &std::collections::BTreeMap<uuid::Uuid, decide::State>,
    workers: usize,
    extra: &[(&str, String)],
) -> Row {
    let tag = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    admin(&format!("CREATE DATABASE {tag}")).await;
    let (s, vars) = settings(&tag, &tag, extra);
    let store = Store::new(&s).unwrap();
    store.migrate().await.unwrap();
    preload(&s, events).await;
    let bin = env!("CARGO_BIN_EXE_user-sync");
    let started = Instant::now();
    let mut children: Vec<_> = (0..workers)
        .map(|_| {
            let mut cmd = Command::new(bin);
            cmd.env_clear()
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null());
            for (k, v) in &vars {
                cmd.env(k.to_uppercase(), v);
            }
            cmd.spawn().unwrap()
        })
        .collect();
    let want_marks = expected.len() as i64;
    let mut rss = 0;
    loop {
        for c in &children {
            rss = rss.max(peak_rss_kib(c.id()));
        }
        let marks: i64 = sqlx::query_scalar("SELECT count(*) FROM user_watermarks")
            .fetch_one(store.pool())
            .await
            .unwrap_or(0);
        if marks == want_marks && queue_depth(&s.rabbitmq_queue).await == 0 {
            let states = store.states().await.unwrap();
            if &states == expected {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{mode}: drain took over 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    for c in &children {
        rss = rss.max(peak_rss_kib(c.id()));
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for c in &mut children {
        let _ = c.wait();
    }
    let verified = store.states().await.unwrap() == *expected;
    store.pool().close().await;
    cleanup(&s, &tag).await;
    Row {
        mode: mode.into(),
        events: events.len(),
        secs,
        rss_mib: Some(rss as f64 / 1024.0),
        verified: Some(verified),
    }
}

/// The ceiling: decode and ack, no database.
async fn drain_ack_only(events: &[(String, Vec<u8>)]) -> Row {
    let tag = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let (s, _) = settings(&tag, &tag, &[]);
    preload(&s, events).await;
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
    let _ = conn.close(200, "bye".into()).await;
    let tag_db = format!("{tag}_none");
    cleanup(&s, &tag_db).await;
    Row {
        mode: "ack-only ceiling (decode + ack, no db)".into(),
        events: events.len(),
        secs,
        rss_mib: None,
        verified: None,
    }
}

fn expected_for(
    events: &[(String, Vec<u8>)],
) -> std::collections::BTreeMap<uuid::Uuid, decide::State> {
    let m = Membership::new("lms", &["teacher".into(), "curator".into(), "admin".into()]);
    let planned: Vec<Planned> = events
        .iter()
        .filter_map(|(k, b)| match decode(b, k, 1 << 20).unwrap() {
            Decoded::Event(e) => Some(decide::plan(&e, &m)),
            Decoded::Unknown { .. } => None,
        })
        .collect();
    decide::converge(&planned)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("DRAIN_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let sample_n: usize = std::env::var("DRAIN_SAMPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let all = events(n);
    let sample = events(sample_n);
    let expected = expected_for(&all);
    let expected_sample = expected_for(&sample);
    eprintln!(
        "drain benchmark: {n} events over {} users; sample {sample_n}",
        expected.len()
    );

    let mut rows = vec![drain_ack_only(&all).await];
    rows.push(drain_with_worker("user-sync, defaults", &all, &expected, 1, &[]).await);
    rows.push(drain_with_worker("user-sync, 2 replicas", &all, &expected, 2, &[]).await);
    rows.push(
        drain_with_worker(
            "BATCH_SIZE=1, PREFETCH=1 (sample)",
            &sample,
            &expected_sample,
            1,
            &[("batch_size", "1".into()), ("prefetch", "1".into())],
        )
        .await,
    );

    let ceiling = rows[0].events as f64 / rows[0].secs;
    println!("| mode | events | seconds | events/s | ratio to ack-only | peak RSS | table |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for r in &rows {
        let rate = r.events as f64 / r.secs;
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.2} | {} | {} |",
            r.mode,
            r.events,
            r.secs,
            rate,
            rate / ceiling,
            r.rss_mib.map_or("-".into(), |m| format!("{m:.1} MiB")),
            r.verified
                .map_or("-", |v| if v { "exact" } else { "MISMATCH" }),
        );
    }
    let defaults = rows[1].events as f64 / rows[1].secs;
    let guide = rows[3].events as f64 / rows[3].secs;
    println!(
        "\nuser-sync defaults vs integration-guide design: {:.1}x",
        defaults / guide
    );
}
