//! The ceiling: an ack-only consumer on the same events as the drains, no database.

use crate::measure::{SystemCpu, self_cpu};
use crate::modes::{Events, Row};
use crate::setup::{AMQP, cleanup, preload, settings, tag};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::time::Instant;
use user_sync::event::decode;

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
        range: None,
        wal: None,
    }
}
