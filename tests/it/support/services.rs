//! The local Postgres and RabbitMQ the tests run against, and the names one test owns
//! there: a database and a set of broker names, each removed when the test ends.

use super::{delete_all, names_of};
use lapin::{Connection, ConnectionProperties};
use sqlx::{Connection as _, PgConnection};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;
use user_sync::broker::Topology;

/// The Postgres server the tests make their databases on: `TEST_DATABASE_URL`, a server
/// URL without a database (default `postgres://postgres@127.0.0.1:5432`).
pub(crate) fn pg() -> String {
    let url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    url.trim_end_matches('/').to_string()
}

/// The broker: `TEST_RABBITMQ_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
pub(crate) fn amqp() -> String {
    std::env::var("TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub(crate) fn broker_uri() -> lapin::uri::AMQPUri {
    amqp().parse().expect("TEST_RABBITMQ_URL is an AMQP URL")
}

/// The broker's `user:password` (as in its URL): what no log or output may show.
pub(crate) fn broker_credentials() -> String {
    let user = broker_uri().authority.userinfo;
    format!("{}:{}", user.username, user.password)
}

/// The broker's `host:port`.
pub(crate) fn broker_addr() -> String {
    let authority = broker_uri().authority;
    format!("{}:{}", authority.host, authority.port)
}

/// The test server's URL for `db`, connecting as `role` (no password) instead of the
/// user of `TEST_DATABASE_URL`.
pub(crate) fn pg_url_as(role: &str, db: &str) -> String {
    let url = pg();
    let (scheme, rest) = url
        .split_once("://")
        .expect("TEST_DATABASE_URL has a scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}@{host}/{db}")
}

/// A database created for one test and dropped (forcibly) when the value is dropped.
pub(crate) struct TestDb {
    pub(crate) name: String,
}

impl TestDb {
    pub(crate) async fn new() -> Self {
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

    pub(crate) fn url(&self) -> String {
        format!("{}/{}", pg(), self.name)
    }
}

/// Runs cleanup on a thread and runtime of its own: Drop may run inside a runtime that
/// cannot block.
pub(crate) fn run_detached<F, Fut>(cleanup: F)
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
pub(crate) struct TestBroker {
    pub(crate) exchange: String,
    pub(crate) queue: String,
    queues: Mutex<BTreeSet<String>>,
    exchanges: Mutex<BTreeSet<String>>,
}

impl TestBroker {
    pub(crate) fn new() -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
        Self {
            exchange: format!("t.{id}.events"),
            queue: format!("t.{id}.q"),
            queues: Mutex::default(),
            exchanges: Mutex::default(),
        }
    }

    /// Remembers the names of `topology` for the cleanup.
    pub(crate) fn track(&self, topology: &Topology) {
        let (queues, exchanges) = names_of(topology);
        self.queues.lock().unwrap().extend(queues);
        self.exchanges.lock().unwrap().extend(exchanges);
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let queues: Vec<String> = std::mem::take(self.queues.get_mut().unwrap())
            .into_iter()
            .collect();
        let exchanges: Vec<String> = std::mem::take(self.exchanges.get_mut().unwrap())
            .into_iter()
            .collect();
        run_detached(move || async move {
            let Ok(conn) = Connection::connect(&amqp(), ConnectionProperties::default()).await
            else {
                return;
            };
            delete_all(&conn, &queues, &exchanges).await;
            let _ = conn.close(200, "bye".into()).await;
        });
    }
}
