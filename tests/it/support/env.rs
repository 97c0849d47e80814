//! One test's environment: its database, its broker names and the settings that join
//! them, with the ways a test runs the real worker and the real binary on them.

use super::*;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use user_sync::broker::Topology;
use user_sync::settings::Settings;
use user_sync::store::Store;

pub(crate) struct Env {
    pub(crate) db: TestDb,
    pub(crate) broker: TestBroker,
    pub(crate) overrides: HashMap<String, String>,
}

impl Env {
    pub(crate) async fn new() -> Self {
        let env = Self {
            db: TestDb::new().await,
            broker: TestBroker::new(),
            overrides: HashMap::new(),
        };
        env.settings();
        env
    }

    pub(crate) fn set(mut self, key: &str, value: &str) -> Self {
        self.overrides.insert(key.into(), value.into());
        self
    }

    pub(crate) fn vars(&self) -> Vec<(String, String)> {
        let amqp = amqp();
        let mut vars: HashMap<String, String> = [
            ("service_name", "lms"),
            ("database_url", self.db.url().as_str()),
            ("rabbitmq_url", amqp.as_str()),
            ("rabbitmq_exchange", self.broker.exchange.as_str()),
            ("rabbitmq_queue", self.broker.queue.as_str()),
            ("retry_delays_ms", "50,100"),
            ("max_attempts", "3"),
            ("http_addr", "127.0.0.1:0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        vars.extend(self.overrides.clone());
        vars.into_iter().collect()
    }

    fn try_settings(&self) -> Result<Settings, user_sync::settings::SettingsError> {
        let vars: HashMap<String, String> = self.vars().into_iter().collect();
        let settings = Settings::from_lookup(|k| vars.get(k).cloned())?;
        self.broker.track(&Topology::new(&settings));
        Ok(settings)
    }

    /// This environment's settings; the broker names they give are deleted with the test.
    pub(crate) fn settings(&self) -> Settings {
        self.try_settings().expect("test settings")
    }

    /// The names of this environment's queues and exchanges.
    pub(crate) fn topology(&self) -> Topology {
        Topology::new(&self.settings())
    }

    pub(crate) fn dlq(&self) -> String {
        self.topology().dlq
    }

    pub(crate) fn hold(&self) -> String {
        self.topology().hold
    }

    pub(crate) fn store(&self) -> Store {
        Store::new(&self.settings()).unwrap()
    }

    /// The real binary with this environment's settings and nothing else from ours.
    pub(crate) fn binary(&self) -> Command {
        self.binary_at(Path::new(env!("CARGO_BIN_EXE_user-sync")))
    }

    /// `binary`, but the program at `program` (another release's build).
    pub(crate) fn binary_at(&self, program: &Path) -> Command {
        let _ = self.try_settings(); // its queues are cleaned up too
        let mut cmd = binary_at(program);
        for (k, v) in self.vars() {
            cmd.env(k.to_uppercase(), v);
        }
        cmd
    }

    /// Runs a command of the real binary (`status`, `dlq list`, ...) to its end.
    pub(crate) fn command(&self, args: &[&str]) -> Run {
        run(self.binary().args(args))
    }

    /// Runs the library's import on `text`, written to a file of this test's own.
    pub(crate) async fn import_text(
        &self,
        text: &str,
        opts: &user_sync::ops::import::ImportOptions,
    ) -> Result<user_sync::ops::import::ImportSummary, user_sync::ops::import::ImportError> {
        let path = std::env::temp_dir().join(format!("{}.import", self.db.name));
        std::fs::write(&path, text).unwrap();
        let result = user_sync::ops::import::import(&self.settings(), &path, opts, |_, _| {}).await;
        std::fs::remove_file(&path).unwrap();
        result
    }

    /// `command`, failing the test if it takes longer than `limit`.
    pub(crate) async fn command_within(&self, args: &[&str], limit: Duration) -> Run {
        let mut cmd = self.binary();
        cmd.args(args);
        run_within(cmd, limit).await
    }

    /// Starts the real binary with its output captured; returns once it consumes.
    pub(crate) async fn spawn_consuming(&self, cmd: &mut Command) -> std::process::Child {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.wait_consumers(1, "binary consuming", Duration::from_secs(30))
            .await;
        child
    }

    /// Waits until the main queue has exactly `n` consumers.
    pub(crate) async fn wait_consumers(&self, n: u32, what: &str, limit: Duration) {
        wait_consumers(&amqp(), &self.broker.queue, n, what, limit).await;
    }

    /// Starts the real worker (`build` + `run`) in this process.
    pub(crate) async fn start(&self) -> Worker {
        self.start_with(self.settings()).await
    }

    /// Starts the real worker with `settings` (this environment's, changed: a `[target]`
    /// mapping, say). Its broker names must be this environment's, so they are cleaned up.
    pub(crate) async fn start_with(&self, settings: Settings) -> Worker {
        let worker = Worker::spawn(settings);
        // Ready once the queue has a consumer: declared, bound and consuming.
        let queue = self.broker.queue.clone();
        wait_for("worker consuming", Duration::from_secs(20), || async {
            queue_counts(&queue)
                .await
                .is_some_and(|(_, consumers)| consumers > 0)
        })
        .await;
        worker
    }

    /// Starts and stops the worker once, so the queues exist: what is published next waits
    /// in the main queue.
    pub(crate) async fn declare(&self) {
        self.start().await.stop().await;
    }

    pub(crate) async fn publisher(&self) -> Publisher {
        Publisher::connect(&amqp(), &self.broker.exchange).await
    }

    pub(crate) async fn dead_letters(&self) -> Vec<lapin::message::Delivery> {
        get_all(&self.dlq()).await
    }

    /// Waits until the DLQ holds exactly `n` letters.
    pub(crate) async fn wait_dead_letters(&self, n: u32, what: &str, limit: Duration) {
        wait_depth(&self.dlq(), n, what, limit).await;
    }
}

/// Publishes a marker event for user 200 and waits until it is applied and the main queue
/// holds nothing, acknowledged or not: everything published before it on the same queue
/// has been processed by then. (The marker applied is not enough with batches in flight:
/// its batch may commit before earlier ones, which are acknowledged first.)
pub(crate) async fn barrier(env: &Env, p: &Publisher, ts: &str) {
    p.send("user.updated", 200, ts, "teacher", &[]).await;
    let store = env.store();
    wait_for("barrier applied", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM users WHERE auth_user_id = $1 AND source_updated_at = $2::timestamptz",
        )
        .bind(uid(200))
        .bind(ts)
        .fetch_one(store.pool())
        .await
        .is_ok_and(|n| n == 1)
    })
    .await;
    let queue = env.broker.queue.clone();
    wait_for("queue settled", Duration::from_secs(20), || async {
        unsettled(&queue) == Some(0)
    })
    .await;
}

/// Deactivations parked in the hold queue (0 before it exists).
pub(crate) async fn hold_depth(env: &Env) -> u32 {
    queue_counts(&env.hold()).await.map_or(0, |c| c.0)
}

/// Letters in the DLQ (0 before it exists).
pub(crate) async fn dlq_depth(env: &Env) -> u32 {
    queue_counts(&env.dlq()).await.map_or(0, |c| c.0)
}

/// Creates students `users` through a running worker and waits until they are all active.
pub(crate) async fn create_all(env: &Env, p: &Publisher, users: &[u8]) {
    for &u in users {
        p.create_student(u, &["lms"]).await;
    }
    let store = env.store();
    let n = users.len();
    wait_for("created", Duration::from_secs(60), || async {
        active_of(&store, users.iter().copied()).await == n
    })
    .await;
}
