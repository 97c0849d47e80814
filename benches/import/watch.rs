//! What the import's own Postgres backends do while it runs, every 50 ms, from a
//! connection of the benchmark's own: their CPU (from `/proc`, by the pids that
//! `pg_stat_activity` lists for the run's database), so that the figure does not include
//! other sessions' work on a shared server; and for a reconcile, the statements they run
//! (`passes`).

use crate::measure::process_cpu;
use crate::passes::Passes;
use crate::run::PG;
use sqlx::{Connection as _, PgConnection};
use std::collections::HashMap;

pub(crate) struct Watch {
    conn: PgConnection,
    db: String,
    /// CPU seconds last read of each backend of the run's database.
    cpu: HashMap<i32, f64>,
    pub passes: Option<Passes>,
}

impl Watch {
    pub(crate) async fn new(db: &str, passes: bool) -> Result<Self, String> {
        let conn = PgConnection::connect(&format!("{PG}/postgres"))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            conn,
            db: db.to_string(),
            cpu: HashMap::new(),
            passes: passes.then(Passes::new),
        })
    }

    /// One look, `at` seconds from the spawn.
    pub(crate) async fn sample(&mut self, at: f64) {
        let rows: Vec<(i32, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT pid, state, query FROM pg_stat_activity WHERE datname = $1 \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .bind(&self.db)
        .fetch_all(&mut self.conn)
        .await
        .unwrap_or_default();
        let mut active = Vec::new();
        for (pid, state, query) in rows {
            let cpu = process_cpu(pid as u32);
            if cpu > 0.0 {
                self.cpu.insert(pid, cpu);
            }
            if let (Some("active"), Some(q)) = (state.as_deref(), query) {
                active.push(q);
            }
        }
        if let Some(p) = self.passes.as_mut() {
            p.see(&active, at);
        }
    }

    /// CPU seconds of the run's backends, as last read (what a backend spent after the last
    /// look, at most 50 ms before it ended, is not counted).
    pub(crate) fn backends_cpu(&self) -> f64 {
        self.cpu.values().sum()
    }

    pub(crate) async fn close(self) -> Option<Passes> {
        let _ = self.conn.close().await;
        self.passes
    }
}
