//! Test environment: a database of its own, broker names of its own, the real worker.

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use sqlx::{Connection as _, PgConnection};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use user_sync::broker::Topology;
use user_sync::decide::{self, Planned};
use user_sync::event::{DEFAULT_MAX_BODY_BYTES, Decoded, decode};
use user_sync::membership::Membership;
use user_sync::settings::Settings;
use user_sync::store::Store;

pub const HASH: &str = "$2b$12$zF7vDVD5e.4xzmEI05ezE.ruqh5Vux7K3MLMbdsBDCmcd.PIs8L/O";

/// The Postgres server the tests make their databases on: `TEST_DATABASE_URL`, a server
/// URL without a database (default `postgres://postgres@127.0.0.1:5432`).
pub fn pg() -> String {
    let url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    url.trim_end_matches('/').to_string()
}

/// The broker: `TEST_RABBITMQ_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
pub fn amqp() -> String {
    std::env::var("TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn broker_uri() -> lapin::uri::AMQPUri {
    amqp().parse().expect("TEST_RABBITMQ_URL is an AMQP URL")
}

/// The broker's `user:password` (as in its URL): what no log or output may show.
pub fn broker_credentials() -> String {
    let user = broker_uri().authority.userinfo;
    format!("{}:{}", user.username, user.password)
}

/// The broker's `host:port`.
pub fn broker_addr() -> String {
    let authority = broker_uri().authority;
    format!("{}:{}", authority.host, authority.port)
}

/// The test server's URL for `db`, connecting as `role` (no password) instead of the
/// user of `TEST_DATABASE_URL`.
pub fn pg_url_as(role: &str, db: &str) -> String {
    let url = pg();
    let (scheme, rest) = url
        .split_once("://")
        .expect("TEST_DATABASE_URL has a scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}@{host}/{db}")
}

/// `TEST_LOG=1`: the in-process worker logs through the test's output, and spawned
/// binaries show what the test does not read.
pub fn test_log() -> bool {
    std::env::var("TEST_LOG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Where a spawned binary's output goes that the test does not read: nowhere, or with
/// `TEST_LOG=1` to this process's own stream.
pub fn unread() -> Stdio {
    if test_log() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// A database created for one test and dropped (forcibly) when the value is dropped.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("usync_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&format!("{}/postgres", pg()))
            .await
            .expect("postgres up");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create database");
        Self { name }
    }

    pub fn url(&self) -> String {
        format!("{}/{}", pg(), self.name)
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
            if let Ok(mut admin) = PgConnection::connect(&format!("{}/postgres", pg())).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        });
    }
}

/// Broker names private to one test. Every queue and exchange of a topology these names
/// were used in (see `Env::settings`: other retry delays name other retry queues) is
/// deleted on drop.
pub struct TestBroker {
    pub exchange: String,
    pub queue: String,
    queues: Mutex<BTreeSet<String>>,
    exchanges: Mutex<BTreeSet<String>>,
}

impl TestBroker {
    pub fn new() -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
        Self {
            exchange: format!("t.{id}.events"),
            queue: format!("t.{id}.q"),
            queues: Mutex::default(),
            exchanges: Mutex::default(),
        }
    }

    /// Remembers the names of `topology` for the cleanup.
    fn track(&self, topology: &Topology) {
        let retries = topology.retry_queues.iter().map(|(q, _)| q);
        let queues = [&topology.queue, &topology.dlq, &topology.hold];
        self.queues
            .lock()
            .unwrap()
            .extend(queues.into_iter().chain(retries).cloned());
        let exchanges = [&topology.exchange, &topology.dlx];
        self.exchanges
            .lock()
            .unwrap()
            .extend(exchanges.into_iter().cloned());
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let queues = std::mem::take(self.queues.get_mut().unwrap());
        let exchanges = std::mem::take(self.exchanges.get_mut().unwrap());
        run_detached(move || async move {
            let Ok(conn) = Connection::connect(&amqp(), ConnectionProperties::default()).await
            else {
                return;
            };
            if let Ok(ch) = conn.create_channel().await {
                for q in queues {
                    let _ = ch
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
                for e in exchanges {
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
        let env = Self {
            db: TestDb::new().await,
            broker: TestBroker::new(),
            overrides: HashMap::new(),
        };
        env.settings();
        env
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.overrides.insert(key.into(), value.into());
        self
    }

    pub fn vars(&self) -> Vec<(String, String)> {
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
    pub fn settings(&self) -> Settings {
        self.try_settings().expect("test settings")
    }

    /// The names of this environment's queues and exchanges.
    pub fn topology(&self) -> Topology {
        Topology::new(&self.settings())
    }

    pub fn dlq(&self) -> String {
        self.topology().dlq
    }

    pub fn hold(&self) -> String {
        self.topology().hold
    }

    pub fn store(&self) -> Store {
        Store::new(&self.settings()).unwrap()
    }

    /// The real binary with this environment's settings and nothing else from ours.
    pub fn binary(&self) -> Command {
        let _ = self.try_settings(); // its queues are cleaned up too
        let mut cmd = binary();
        for (k, v) in self.vars() {
            cmd.env(k.to_uppercase(), v);
        }
        cmd
    }

    /// Runs a command of the real binary (`status`, `dlq list`, ...) to its end.
    pub fn command(&self, args: &[&str]) -> Run {
        run(self.binary().args(args))
    }

    /// Runs the library's import on `text`, written to a file of this test's own.
    pub async fn import_text(
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
    pub async fn command_within(&self, args: &[&str], limit: Duration) -> Run {
        let mut cmd = self.binary();
        cmd.args(args);
        run_within(cmd, limit).await
    }

    /// Starts the real binary with its output captured; returns once it consumes.
    pub async fn spawn_consuming(&self, cmd: &mut Command) -> std::process::Child {
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
    pub async fn wait_consumers(&self, n: u32, what: &str, limit: Duration) {
        let queue = self.broker.queue.clone();
        wait_for(what, limit, || async {
            queue_counts(&queue).await.is_some_and(|(_, c)| c == n)
        })
        .await;
    }

    /// Starts the real worker (`build` + `run`) in this process.
    pub async fn start(&self) -> Worker {
        self.start_with(self.settings()).await
    }

    /// Starts the real worker with `settings` (this environment's, changed: a `[target]`
    /// mapping, say). Its broker names must be this environment's, so they are cleaned up.
    pub async fn start_with(&self, settings: Settings) -> Worker {
        if test_log() {
            install_test_subscriber();
        }
        let shutdown = CancellationToken::new();
        let app = user_sync::build(settings).unwrap();
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

    /// Starts and stops the worker once, so the queues exist: what is published next waits
    /// in the main queue.
    pub async fn declare(&self) {
        self.start().await.stop().await;
    }

    pub async fn publisher(&self) -> Publisher {
        Publisher::connect(&amqp(), &self.broker.exchange).await
    }

    pub async fn dead_letters(&self) -> Vec<lapin::message::Delivery> {
        get_all(&self.dlq()).await
    }

    /// Waits until the DLQ holds exactly `n` letters.
    pub async fn wait_dead_letters(&self, n: u32, what: &str, limit: Duration) {
        wait_depth(&self.dlq(), n, what, limit).await;
    }
}

/// The in-process worker's logs through the test writer (shown with a failing test's
/// output), installed once for the whole binary: `TEST_LOG=1`.
pub fn install_test_subscriber() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=warn,sqlx=warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// The real binary with an empty environment (PATH aside) and no config file.
pub fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_user-sync"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CONFIG_FILE", "/nonexistent/user-sync.toml")
        .current_dir(std::env::temp_dir());
    cmd
}

/// What a command of the real binary did.
pub struct Run {
    /// The exit code (-1 if a signal ended it).
    pub code: i32,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn of(out: std::process::Output) -> Self {
        let run = Self {
            code: out.status.code().unwrap_or(-1),
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if test_log() {
            // Shown with the output of a test that fails.
            eprint!("{}", run.stderr);
        }
        run
    }

    /// Fails the test, with the command's stderr, unless the command succeeded.
    pub fn ok(self) -> Self {
        assert!(self.success, "{}", self.stderr);
        self
    }

    /// stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", self.stdout, self.stderr))
    }

    /// stdout, then stderr.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs a command to its end with its output captured.
pub fn run(cmd: &mut Command) -> Run {
    Run::of(cmd.output().unwrap())
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
    /// A confirming publisher to `exchange` through the broker at `url`.
    pub async fn connect(url: &str, exchange: &str) -> Self {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Publisher {
            _conn: conn,
            ch,
            exchange: exchange.to_string(),
        }
    }

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
    let conn = Connection::connect(&amqp(), ConnectionProperties::default())
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
    let conn = Connection::connect(&amqp(), ConnectionProperties::default())
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
    let mut admin = PgConnection::connect(&format!("{}/postgres", pg()))
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
pub async fn run_within(mut cmd: Command, limit: Duration) -> Run {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(limit, waiting).await {
        Ok(out) => Run::of(out.unwrap().unwrap()),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("command did not finish within {limit:?}");
        }
    }
}

/// Sends SIGTERM to a spawned binary.
pub fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM");
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

/// Waits until `queue` holds exactly `n` messages.
pub async fn wait_depth(queue: &str, n: u32, what: &str, limit: Duration) {
    wait_for(what, limit, || async {
        queue_counts(queue).await.is_some_and(|(got, _)| got == n)
    })
    .await;
}

/// Publishes a marker event for user 200 and waits until it is applied and the main queue
/// holds nothing, acknowledged or not: everything published before it on the same queue
/// has been processed by then. (The marker applied is not enough with batches in flight:
/// its batch may commit before earlier ones, which are acknowledged first.)
pub async fn barrier(env: &Env, p: &Publisher, ts: &str) {
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

/// Messages ready or unacknowledged in `queue`, as `rabbitmqctl` reports them.
pub fn unsettled(queue: &str) -> Option<u64> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "name", "messages"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut cols = l.split_whitespace();
        (cols.next() == Some(queue)).then(|| cols.next()?.parse().ok())?
    })
}

/// The one number a `SELECT count(*) ...` gives.
pub async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// An update of `user` taking the email of `owner`: an email conflict while `owner` has it.
pub fn taking_email_of(user: u8, owner: u8, ts: &str) -> serde_json::Value {
    let mut e = event("user.updated", user, ts, "student", &["lms"]);
    e["user"]["email"] = format!("user{owner}@example.com").into();
    e
}

/// What the service plans for the well-formed `e`, as `lms` with the teachers as staff.
pub fn planned(e: &serde_json::Value) -> Planned {
    plan_as(e, &Membership::new("lms", &["teacher".into()]))
}

/// What the service plans for the well-formed `e` under `membership`.
pub fn plan_as(e: &serde_json::Value, membership: &Membership) -> Planned {
    match decode(
        e.to_string().as_bytes(),
        "user.updated",
        DEFAULT_MAX_BODY_BYTES,
    )
    .unwrap()
    {
        Decoded::Event(e) => decide::plan(&e, membership),
        Decoded::Unknown { .. } => unreachable!(),
    }
}

/// Installs a trigger on the users table that refuses rows named `Refused` (P0001), as a
/// backend's own validation would.
pub async fn refusing_trigger(store: &Store) {
    for sql in [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.first_name = 'Refused' THEN RAISE EXCEPTION 'refused by the backend'; END IF; \
           RETURN NEW; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION refuse()",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
}

/// Properties carrying one header.
pub fn with_header(key: &str, value: AMQPValue) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(key.into(), value);
    BasicProperties::default().with_headers(headers)
}

/// Properties carrying `x-signature`: `signature`.
pub fn signed_with(signature: &str) -> BasicProperties {
    with_header(
        user_sync::headers::SIGNATURE,
        user_sync::broker::text(signature),
    )
}

/// Properties carrying the signature of `body` with `key`.
pub fn signed_by(key: &str, body: &[u8]) -> BasicProperties {
    signed_with(&user_sync::signature::sign(&key.to_string().into(), body))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PgBouncer of a test's own in front of the Postgres on `server_port`, in `pool_mode`
/// (Debian's `pgbouncer`, installed by `.ci/run`); stopped and removed on drop.
pub struct Bouncer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Bouncer {
    pub async fn start(server_port: u16, pool_mode: &str) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("pgbouncer-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let users = dir.join("users.txt");
        std::fs::write(&users, "\"postgres\" \"\"\n").unwrap();
        // sqlx sends extra_float_digits in the startup packet; the usual setting lets it by.
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port={server_port}\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\n\
             auth_file = {}\npool_mode = {pool_mode}\n\
             ignore_startup_parameters = extra_float_digits\nunix_socket_dir =\n",
            users.display()
        );
        let ini_path = dir.join("pgbouncer.ini");
        std::fs::write(&ini_path, ini).unwrap();
        for path in [&dir, &users, &ini_path] {
            use std::os::unix::fs::PermissionsExt;
            let mode = if path == &dir { 0o755 } else { 0o644 };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        // PgBouncer refuses to run as root; it drops to `nobody` itself.
        let mut cmd = Command::new("pgbouncer");
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .arg(&ini_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pgbouncer installed (.ci/run installs Debian's package)");
        wait_for(
            "pgbouncer listening",
            Duration::from_secs(30),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            },
        )
        .await;
        Bouncer { child, port, dir }
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A history as a broker might deliver it: every third event twice, in a fixed shuffle
/// (reversed, then its halves interleaved).
pub fn replayed_out_of_order(history: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    let mut stream: Vec<&serde_json::Value> =
        history.iter().chain(history.iter().step_by(3)).collect();
    stream.reverse();
    let (left, right) = stream.split_at(stream.len() / 2);
    left.iter()
        .zip(right.iter())
        .flat_map(|(x, y)| [*x, *y])
        .chain(right.iter().skip(left.len()).copied())
        .collect()
}

/// Runs `cmd` to its end; its exit code and peak resident memory in KiB, as the kernel's
/// high-water mark of the process's own memory (`VmHWM`, which starts afresh at exec),
/// read until it exits. (`wait4`'s `ru_maxrss` would include this test process's own
/// peak: the child runs on its parent's memory until exec.)
pub async fn peak_rss(mut cmd: std::process::Command) -> (i32, i64) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        let hwm = std::fs::read_to_string(&status).ok().and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<i64>().ok()
        });
        peak = peak.max(hwm.unwrap_or(0));
        if let Some(exit) = child.try_wait().unwrap() {
            return (exit.code().unwrap_or(-1), peak);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
