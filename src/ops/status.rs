//! `user-sync status`: queue depths and consumers by passive declare (no management
//! plugin needed, nothing created), and the table's user counts when `DATABASE_URL` is set.

use crate::broker::{self, Topology};
use crate::settings::Settings;
use crate::store::{Store, UserCounts};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct QueueStatus {
    pub queue: String,
    pub role: String,
    /// `None`: the queue does not exist (the worker has never started, or it was deleted).
    pub messages: Option<u32>,
    pub consumers: Option<u32>,
}

#[derive(Debug)]
pub struct Status {
    pub queues: Result<Vec<QueueStatus>, String>,
    /// `None`: no `DATABASE_URL`, so the database was not asked.
    pub database: Option<Result<UserCounts, String>>,
}

impl Status {
    /// The broker answered, and so did the database if one is configured.
    pub fn reachable(&self) -> bool {
        self.queues.is_ok() && self.database.as_ref().is_none_or(Result::is_ok)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "queues": match &self.queues { Ok(q) => serde_json::json!(q), Err(e) => serde_json::json!({"error": e}) },
            "database": match &self.database {
                Some(Ok(d)) => serde_json::json!(d),
                Some(Err(e)) => serde_json::json!({"error": e}),
                None => serde_json::json!({"configured": false}),
            },
        })
    }

    pub fn to_table(&self) -> String {
        let mut out = String::new();
        match &self.queues {
            Ok(queues) => {
                let rows: Vec<Vec<String>> = queues
                    .iter()
                    .map(|q| {
                        let n = |v: Option<u32>| v.map_or("missing".into(), |v| v.to_string());
                        vec![
                            q.queue.clone(),
                            q.role.clone(),
                            n(q.messages),
                            n(q.consumers),
                        ]
                    })
                    .collect();
                out += &super::table(&["queue", "role", "ready", "consumers"], &rows);
            }
            Err(e) => out += &format!("broker unreachable: {e}\n"),
        }
        out += "\n";
        match &self.database {
            Some(Ok(c)) => {
                let mut rows = vec![vec!["active".to_string(), c.active.to_string()]];
                for (reason, n) in &c.inactive {
                    rows.push(vec![format!("inactive ({reason})"), n.to_string()]);
                }
                rows.push(vec!["users seen".into(), c.users_seen.to_string()]);
                let newest = c.newest_event.map_or("-".into(), |t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default()
                });
                rows.push(vec!["newest event".into(), newest]);
                out += &super::table(&["users", "count"], &rows);
            }
            Some(Err(e)) => out += &format!("database unreachable: {e}\n"),
            None => out += "database: not configured (no DATABASE_URL), so no user counts\n",
        }
        out
    }
}

pub async fn status(settings: &Settings) -> Status {
    let database = match settings.database_url() {
        Ok(_) => Some(user_counts(settings).await),
        Err(_) => None,
    };
    Status {
        queues: queues(settings).await.map_err(|e| e.to_string()),
        database,
    }
}

async fn user_counts(settings: &Settings) -> Result<UserCounts, String> {
    let store = Store::new(settings).map_err(|e| e.to_string())?;
    let counts = store.user_counts().await.map_err(|e| e.to_string());
    store.pool().close().await;
    counts
}

async fn queues(settings: &Settings) -> Result<Vec<QueueStatus>, broker::BrokerError> {
    let topo = Topology::new(settings);
    let conn = broker::connect(settings).await?;
    let mut names = vec![(topo.queue.clone(), "main".to_string())];
    for (q, delay) in &topo.retry_queues {
        names.push((q.clone(), format!("retry after {} ms", delay.as_millis())));
    }
    names.push((topo.dlq.clone(), "dead letters".into()));
    names.push((topo.hold.clone(), "held by the brake".into()));
    let mut out = Vec::new();
    for (queue, role) in names {
        let counts = broker::queue_counts(&conn, &queue).await?;
        out.push(QueueStatus {
            queue,
            role,
            messages: counts.map(|c| c.0),
            consumers: counts.map(|c| c.1),
        });
    }
    let _ = conn.close(200, "status".into()).await;
    Ok(out)
}
