//! The benchmark's fixtures: deterministic events, fresh databases and queues, preloading.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sqlx::{Connection as _, PgConnection};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use user_sync::broker::{Topology, declare};
use user_sync::decide::{self, Planned};
use user_sync::event::{Decoded, decode};
use user_sync::membership::Membership;
use user_sync::settings::Settings;

/// The Postgres server the modes make their databases on: `DRAIN_PG` (a server URL
/// without a database), by default the local one.
pub(crate) fn pg() -> String {
    let url = std::env::var("DRAIN_PG");
    let url = url.unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    url.trim_end_matches('/').to_string()
}

/// `host:port` of the server.
pub(crate) fn pg_addr() -> String {
    let url = pg();
    let rest = url.rsplit_once('@').map_or(url.as_str(), |(_, r)| r);
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}
pub(crate) const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub(crate) const HASH: &str = "$2b$12$zF7vDVD5e.4xzmEI05ezE.ruqh5Vux7K3MLMbdsBDCmcd.PIs8L/O";

/// A fresh name for a mode's database and queues.
pub(crate) fn tag() -> String {
    format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// Deterministic events: creates, updates (some revoking), deletes, over N/4 users, with
/// every tenth event duplicated and neighbouring pairs swapped (out of order).
pub(crate) fn events(n: usize) -> Vec<(String, Vec<u8>)> {
    events_over(n, n / 4)
}

/// The same kind of stream over `users` users.
pub(crate) fn events_over(n: usize, users: usize) -> Vec<(String, Vec<u8>)> {
    let users = users.max(1);
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

pub(crate) fn settings(
    db: &str,
    queue: &str,
    extra: &[(&str, String)],
) -> (Settings, Vec<(String, String)>) {
    let mut vars: HashMap<String, String> = [
        ("service_name", "lms".to_string()),
        // Plain TCP, as a sidecar beside its database runs (TLS is for a remote database).
        ("database_url", format!("{}/{db}?sslmode=disable", pg())),
        ("rabbitmq_url", AMQP.to_string()),
        ("rabbitmq_exchange", format!("{queue}.events")),
        ("rabbitmq_queue", queue.to_string()),
        ("log_format", "json".to_string()),
        ("http_addr", "127.0.0.1:0".to_string()),
        // The stream deletes thousands of users in seconds: exactly what the brake is
        // there to stop. A drain benchmark measures the apply path, so it is off.
        ("deactivation_brake", "0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // `DRAIN_SET=pipeline_depth=3,prefetch=4000`: settings for every mode, under the
    // mode's own.
    let set = std::env::var("DRAIN_SET").unwrap_or_default();
    for (k, v) in set.split(',').filter_map(|kv| kv.split_once('=')) {
        vars.insert(k.trim().to_lowercase(), v.trim().to_string());
    }
    for (k, v) in extra {
        vars.insert(k.to_string(), v.clone());
    }
    let s = Settings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    (s, vars.into_iter().collect())
}

pub(crate) async fn admin(sql: &str) {
    let mut c = PgConnection::connect(&format!("{}/postgres", pg()))
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut c).await.unwrap();
}

/// Publishes one persistent event; the confirm (when the channel is in confirm mode) is
/// the caller's to await.
pub(crate) async fn publish(
    ch: &lapin::Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
) -> lapin::Result<lapin::PublisherConfirm> {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
}

/// Declares the topology and publishes the events with publisher confirms.
pub(crate) async fn preload(s: &Settings, events: &[(String, Vec<u8>)]) {
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
            let confirm = publish(&ch, &s.rabbitmq_exchange, key, body).await.unwrap();
            confirms.push(confirm);
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack(), "preload confirmed");
        }
    }
    let _ = conn.close(200, "bye".into()).await;
}

/// Reads a queue's counts by passive declare over one connection kept open, so polling
/// during a timed drain costs the broker one frame, not a connection, per look.
pub(crate) struct QueueWatch {
    conn: Connection,
    ch: lapin::Channel,
    queue: String,
}

impl QueueWatch {
    pub(crate) async fn new(queue: &str) -> Self {
        let conn = Connection::connect(AMQP, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        Self {
            conn,
            ch,
            queue: queue.to_string(),
        }
    }

    /// (messages ready, consumers).
    pub(crate) async fn counts(&self) -> (u32, u32) {
        let opts = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = self
            .ch
            .queue_declare(self.queue.as_str().into(), opts, FieldTable::default())
            .await
            .expect("the queue exists while it is watched");
        (q.message_count(), q.consumer_count())
    }

    pub(crate) async fn close(self) {
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

pub(crate) async fn cleanup(s: &Settings, db: &str) {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let topo = Topology::new(s);
    let mut queues = vec![topo.queue.clone(), topo.dlq.clone(), topo.hold.clone()];
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
    // `DRAIN_KEEP_DB=1` leaves each mode's database behind, to look at its tables.
    if std::env::var("DRAIN_KEEP_DB").is_ok_and(|v| v == "1") {
        eprintln!("kept database {db}");
        return;
    }
    admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
}

pub(crate) fn expected_for(events: &[(String, Vec<u8>)]) -> BTreeMap<uuid::Uuid, decide::State> {
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
