//! A RabbitMQ node and a Postgres server of a test's own, each asking for client
//! certificates signed by the test's CA (`scripts/rabbitmq-tls.sh`,
//! `scripts/postgres-tls.sh`); stopped and removed when dropped.

use crate::support::{Ca, Dir};
use crate::support::{free_port, script, script_path};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Executor};
use std::process::Command;

/// The user RabbitMQ's EXTERNAL and Postgres's `cert` log in as: a client certificate's CN.
pub(crate) const USER: &str = "usync";
/// A RabbitMQ user that logs in with a password (over the same mutual TLS).
pub(crate) const PASSWORD_USER: &str = "usync-pw";

/// Writes the CA and a server certificate where the scripts look for them.
fn server_files(dir: &Dir, pki: &Ca) {
    dir.write("ca.pem", &pki.pem());
    dir.pair("server", &pki.server());
}

pub(crate) struct TlsRabbit {
    dir: Dir,
    /// Its AMQPS port on 127.0.0.1.
    pub port: u16,
    /// `PASSWORD_USER`'s password.
    pub password: String,
}

impl TlsRabbit {
    /// Starts the node (about 10 s) and adds `USER` and `PASSWORD_USER`, both with every
    /// permission on vhost `/`.
    pub(crate) fn start(pki: &Ca) -> Self {
        let dir = Dir::new("usync-mtls-rabbit");
        server_files(&dir, pki);
        let (port, dist) = (free_port(), free_port());
        let shown = dir.path().display().to_string();
        script(
            "rabbitmq-tls.sh",
            &["start", &shown, &port.to_string(), &dist.to_string()],
        );
        let node = TlsRabbit {
            dir,
            port,
            password: uuid::Uuid::new_v4().simple().to_string(),
        };
        // EXTERNAL ignores the password: a random one nobody knows.
        let unknown = uuid::Uuid::new_v4().simple().to_string();
        let password = node.password.clone();
        for (user, pass) in [(USER, unknown.as_str()), (PASSWORD_USER, &password)] {
            node.ctl(&["add_user", user, pass]);
            node.ctl(&["set_permissions", "-p", "/", user, ".*", ".*", ".*"]);
        }
        node
    }

    /// `rabbitmqctl ARGS` against this node; its output.
    pub(crate) fn ctl(&self, args: &[&str]) -> String {
        let dir = self.dir.path().display().to_string();
        let mut all = vec!["ctl", dir.as_str(), "-q"];
        all.extend_from_slice(args);
        script("rabbitmq-tls.sh", &all)
    }

    /// The open connections as `user mechanism` lines.
    pub(crate) fn logins(&self) -> String {
        self.ctl(&["list_connections", "user", "auth_mechanism"])
    }
}

impl Drop for TlsRabbit {
    fn drop(&mut self) {
        let dir = self.dir.path().display().to_string();
        let _ = Command::new(script_path("rabbitmq-tls.sh"))
            .args(["stop", &dir])
            .status();
    }
}

pub(crate) struct TlsPostgres {
    dir: Dir,
    pub port: u16,
}

impl TlsPostgres {
    /// initdb, start (a second or two), then role `USER` and its database `app`.
    pub(crate) async fn start(pki: &Ca) -> Self {
        let dir = Dir::new("usync-mtls-pg");
        server_files(&dir, pki);
        let port = free_port();
        let shown = dir.path().display().to_string();
        script("postgres-tls.sh", &["start", &shown, &port.to_string()]);
        let server = TlsPostgres { dir, port };
        let mut admin = PgConnectOptions::new()
            .socket(server.dir.path())
            .port(port)
            .username("postgres")
            .database("postgres")
            .connect()
            .await
            .unwrap();
        admin
            .execute(format!("CREATE ROLE \"{USER}\" LOGIN").as_str())
            .await
            .unwrap();
        admin
            .execute(format!("CREATE DATABASE app OWNER \"{USER}\"").as_str())
            .await
            .unwrap();
        server
    }

    /// A URL for `USER` on database `app` over TCP, with `query` (`sslmode=...&...`).
    pub(crate) fn url(&self, query: &str) -> String {
        format!("postgres://{USER}@localhost:{}/app?{query}", self.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let dir = self.dir.path().display().to_string();
        let _ = Command::new(script_path("postgres-tls.sh"))
            .args(["stop", &dir])
            .status();
    }
}
