//! Test environment: a database of its own, broker names of its own, the real worker.

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use sqlx::{Connection as _, PgConnection};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use user_sync::settings::Settings;
use user_sync::store::Store;

pub const PG: &str = "postgres://postgres@127.0.0.1:5432";
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const HASH: &str = "$2b$12$zF7vDVD5e.4xzmEI05ezE.ruqh5Vux7K3MLMbdsBDCmcd.PIs8L/O";

/// A database created for one test and dropped (forcibly) when the value is dropped.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("usync_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&format!("{PG}/postgres"))
            .await
            .expect("postgres up");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create database");
        Self { name }
    }

    pub fn url(&self) -> String {
        format!("{PG}/{}", self.name)
    }
}

/// Runs cleanup on a thread and runtime of its own: Drop may run inside a runtime that
/// cannot block.
fn run_detached<F, Fut>(cleanup: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(cleanup())
    })
    .join();
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        run_detached(move || async move {
            if let Ok(mut admin) = PgConnection::connect(&format!("{PG}/postgres")).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        });
    }
}

/// Broker names private to one test; the queues and exchanges are deleted on drop.
pub struct TestBroker {
    pub exchange: String,
    pub queue: String,
}

impl TestBroker {
    pub fn new() -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
        Self {
            exchange: format!("t.{id}.events"),
            queue: format!("t.{id}.q"),
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let (exchange, queue) = (self.exchange.clone(), self.queue.clone());
        run_detached(move || async move {
            let Ok(conn) = Connection::connect(AMQP, ConnectionProperties::default()).await else {
                return;
            };
            if let Ok(ch) = conn.create_channel().await {
                for q in [
                    queue.clone(),
                    format!("{queue}.dlq"),
                    format!("{queue}.hold"),
                    format!("{queue}.retry.50ms"),
                    format!("{queue}.retry.100ms"),
                    format!("{queue}.retry.1000ms"),
                    format!("{queue}.retry.10000ms"),
                    format!("{queue}.retry.60000ms"),
                ] {
                    let _ = ch
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
                for e in [exchange.clone(), format!("{queue}.dlx")] {
                    let _ = ch
                        .exchange_delete(e.as_str().into(), Default::default())
                        .await;
                }
            }
            let _ = conn.close(200, "bye".into()).await;
        });
    }
}

pub struct Env {
    pub db: TestDb,
    pub broker: TestBroker,
    pub overrides: HashMap<String, String>,
}

impl Env {
    pub async fn new() -> Self {
        Self {
            db: TestDb::new().await,
            broker: TestBroker::new(),
            overrides: HashMap::new(),
        }
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.overrides.insert(key.into(), value.into());
        self
    }

    pub fn vars(&self) -> Vec<(String, String)> {
        let mut vars: HashMap<String, String> = [
            ("service_name", "lms"),
            ("database_url", self.db.url().as_str()),
            ("rabbitmq_url", AMQP),
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

    pub fn settings(&self) -> Settings {
        let vars: HashMap<String, String> = self.vars().into_iter().collect();
        Settings::from_lookup(|k| vars.get(k).cloned()).expect("test settings")
    }

    pub fn store(&self) -> Store {
        Store::new(&self.settings()).unwrap()
    }

    /// The real binary with this environment's settings and nothing else from ours.
    pub fn binary(&self) -> std::process::Command {
        let mut cmd = binary();
        for (k, v) in self.vars() {
            cmd.env(k.to_uppercase(), v);
        }
        cmd
    }

    /// Starts the real binary with its output captured; returns once it consumes.
    pub async fn spawn_consuming(&self, cmd: &mut std::process::Command) -> std::process::Child {
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let queue = self.broker.queue.clone();
        wait_for("binary consuming", Duration::from_secs(30), || async {
            queue_counts(&queue).await.is_some_and(|(_, c)| c == 1)
        })
        .await;
        child
    }

    /// Starts the real worker (`build` + `run`) in this process.
    pub async fn start(&self) -> Worker {
        let shutdown = CancellationToken::new();
        let app = user_sync::build(self.settings()).unwrap();
        let http = app.http_addr();
        let task = tokio::spawn(user_sync::run(app, shutdown.clone()));
        let worker = Worker {
            shutdown,
            task,
            http,
        };
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

    pub async fn publisher(&self) -> Publisher {
        let conn = Connection::connect(AMQP, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Publisher {
            _conn: conn,
            ch,
            exchange: self.broker.exchange.clone(),
        }
    }

    pub async fn dead_letters(&self) -> Vec<lapin::message::Delivery> {
        get_all(&format!("{}.dlq", self.broker.queue)).await
    }
}

/// The real binary with an empty environment (PATH aside) and no config file.
pub fn binary() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_user-sync"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CONFIG_FILE", "/nonexistent/user-sync.toml")
        .current_dir(std::env::temp_dir());
    cmd
}

pub struct Worker {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), user_sync::StartError>>,
    pub http: std::net::SocketAddr,
}

impl Worker {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("worker stops within 15 s")
            .expect("worker task")
            .expect("worker ran cleanly");
    }
}

pub struct Publisher {
    _conn: Connection,
    pub ch: Channel,
    exchange: String,
}

impl Publisher {
    pub async fn publish(&self, routing_key: &str, body: &[u8]) {
        self.publish_with(routing_key, body, BasicProperties::default())
            .await
    }

    pub async fn publish_with(&self, routing_key: &str, body: &[u8], props: BasicProperties) {
        let confirm = self
            .ch
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props.with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }

    /// Publishes the well-formed `event(kind, user, ts, role, services)`.
    pub async fn send(&self, kind: &str, user: u8, ts: &str, role: &str, services: &[&str]) {
        self.publish_json(&event(kind, user, ts, role, services))
            .await;
    }

    /// The most common event of these tests: a student created at the start of 2024.
    pub async fn create_student(&self, user: u8, services: &[&str]) {
        self.send(
            "user.created",
            user,
            "2024-01-01T00:00:00Z",
            "student",
            services,
        )
        .await;
    }

    /// User 1 active, then user 2 created with user 1's email: an email conflict that
    /// never resolves by itself (retried, then dead-lettered).
    pub async fn email_clash(&self) {
        self.create_student(1, &["lms"]).await;
        let mut clash = event(
            "user.created",
            2,
            "2024-01-02T00:00:00Z",
            "student",
            &["lms"],
        );
        clash["user"]["email"] = "user1@example.com".into();
        self.publish_json(&clash).await;
    }

    pub async fn publish_json(&self, event: &serde_json::Value) {
        let key = event["event_type"]
            .as_str()
            .unwrap_or("user.updated")
            .to_string();
        self.publish(&key, event.to_string().as_bytes()).await;
    }
}

/// (messages ready, consumers) of a queue, by passive declare; None if it does not exist.
pub async fn queue_counts(queue: &str) -> Option<(u32, u32)> {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .ok()?;
    let ch = conn.create_channel().await.ok()?;
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(queue.into(), opts, FieldTable::default())
        .await
        .ok();
    let _ = conn.close(200, "bye".into()).await;
    q.map(|q| (q.message_count(), q.consumer_count()))
}

/// Takes every message from a queue (acked, so the queue is left empty).
pub async fn get_all(queue: &str) -> Vec<lapin::message::Delivery> {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Ok(Some(m)) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
    {
        out.push(m.delivery);
    }
    let _ = conn.close(200, "bye".into()).await;
    out
}

/// Polls `check` until it holds, failing the test after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A well-formed event for `user` (a small number names a fixed UUID).
pub fn event(kind: &str, user: u8, ts: &str, role: &str, services: &[&str]) -> serde_json::Value {
    let id = uuid::Uuid::from_bytes([user; 16]).to_string();
    serde_json::json!({
        "event_type": kind,
        "user_id": id,
        "user": {
            "id": id,
            "email": format!("user{user}@example.com"),
            "first_name": "Test",
            "last_name": format!("User {user}"),
            "password_hash": HASH,
            "role": role,
            "is_active": true,
            "allowed_services_json": serde_json::to_string(services).unwrap(),
        },
        "timestamp": ts,
    })
}

pub fn uid(user: u8) -> uuid::Uuid {
    uuid::Uuid::from_bytes([user; 16])
}

/// One user's row as (is_active, deactivation_reason, email), if any.
pub async fn row(store: &Store, user: u8) -> Option<(bool, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT is_active, deactivation_reason, email FROM users WHERE auth_user_id = $1",
    )
    .bind(uid(user))
    .fetch_optional(store.pool())
    .await
    .unwrap()
}

/// Refuses (and cuts) or allows again every connection to a test database: an outage.
pub async fn set_connections(db: &str, allow: bool) {
    let mut admin = PgConnection::connect(&format!("{PG}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS {allow}"))
        .execute(&mut admin)
        .await
        .unwrap();
    if !allow {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(db)
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

/// A plain HTTP/1.1 GET: (status code, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

pub fn header(d: &lapin::message::Delivery, key: &str) -> Option<String> {
    user_sync::headers::header_str(&d.properties, key)
}

/// Runs a command to its end, failing the test if it takes longer than `limit` (the
/// process is killed first, so nothing is left running).
pub async fn output_within(
    mut cmd: std::process::Command,
    limit: Duration,
) -> std::process::Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(limit, waiting).await {
        Ok(out) => out.unwrap().unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("command did not finish within {limit:?}");
        }
    }
}

/// A RabbitMQ policy on the queues matching one exact name, cleared on drop.
pub struct Policy {
    name: String,
}

impl Policy {
    pub async fn set(queue: &str, definition: &str) -> Self {
        let name = format!("{queue}.policy");
        let pattern = format!("^{}$", queue.replace('.', "\\."));
        let ok = std::process::Command::new("rabbitmqctl")
            .args([
                "set_policy",
                "--apply-to",
                "queues",
                &name,
                &pattern,
                definition,
            ])
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "rabbitmqctl set_policy");
        let policy = Self { name };
        let listed = || async {
            let out = std::process::Command::new("rabbitmqctl")
                .args(["list_queues", "-q", "name", "policy"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.split_whitespace().eq([queue, policy.name.as_str()]))
        };
        wait_for("policy applied", Duration::from_secs(30), listed).await;
        policy
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["clear_policy", &self.name])
            .output();
    }
}
