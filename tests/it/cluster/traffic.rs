//! Traffic through the cluster while a node fails: a paced publisher on a node that stays
//! up, and the progress of the table, read as the newest event applied.

use crate::support::{churn_stream, confirming, model_states};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use user_sync::decide;
use user_sync::store::Store;
use uuid::Uuid;

/// Events per test, and how many are published per tick of `TICK`: about 500 a second, so
/// the stream runs for about six seconds and a kill lands in the middle of it.
pub const EVENTS: usize = 3000;

const CHUNK: usize = 10;

const TICK: Duration = Duration::from_millis(20);

/// The `EVENTS` events of `churn_stream`, published in order: event `i` is dated `i`
/// seconds into 2024, so the newest timestamp applied says how far the worker got.
pub fn stream() -> Vec<(i64, serde_json::Value)> {
    churn_stream(EVENTS)
}

/// The table the stream must leave, by the reference model.
pub fn expected(events: &[(i64, serde_json::Value)]) -> BTreeMap<Uuid, decide::State> {
    model_states(events.iter().map(|(_, e)| e))
}

/// The index (seconds since the first) of the newest event applied; -1 before any.
pub async fn applied(store: &Store) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>(
        "SELECT (extract(epoch FROM max(event_ts)) - extract(epoch FROM '2024-01-01T00:00:00Z'::timestamptz))::bigint \
         FROM user_watermarks",
    )
    .fetch_one(store.pool())
    .await
    .ok()
    .flatten()
    .unwrap_or(-1)
}

/// Publishing in the background.
pub struct Traffic {
    /// The index of the newest event whose publish has begun.
    newest: Arc<AtomicI64>,
    task: JoinHandle<()>,
}

impl Traffic {
    /// Publishes `events` in order to `exchange` through `url`, `CHUNK` per `TICK`, each
    /// chunk confirmed before the next.
    pub async fn start(
        url: String,
        exchange: String,
        events: Vec<(i64, serde_json::Value)>,
    ) -> Self {
        let (conn, ch) = confirming(&url).await;
        let newest = Arc::new(AtomicI64::new(-1));
        let counter = newest.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for chunk in events.chunks(CHUNK) {
                tick.tick().await;
                let mut confirms = Vec::with_capacity(chunk.len());
                for (i, e) in chunk {
                    counter.store(*i, Ordering::SeqCst);
                    let key = e["event_type"].as_str().unwrap().to_string();
                    let body = e.to_string();
                    let confirm = ch
                        .basic_publish(
                            exchange.as_str().into(),
                            key.as_str().into(),
                            BasicPublishOptions::default(),
                            body.as_bytes(),
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await
                        .expect("publish");
                    confirms.push(confirm);
                }
                for confirm in confirms {
                    assert!(confirm.await.expect("confirm").is_ack(), "publish nacked");
                }
            }
            let _ = conn.close(200, "published".into()).await;
        });
        Self { newest, task }
    }

    /// The index of the newest event whose publish has begun.
    pub fn newest(&self) -> i64 {
        self.newest.load(Ordering::SeqCst)
    }

    /// Waits until every event is published and confirmed.
    pub async fn finish(self, limit: Duration) {
        tokio::time::timeout(limit, self.task)
            .await
            .expect("the publisher finishes")
            .expect("the publisher did not fail");
    }
}
