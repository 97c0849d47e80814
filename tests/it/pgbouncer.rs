//! Through PgBouncer, the pooler many teams put before Postgres (Debian's `pgbouncer`,
//! installed by `.ci/run`): session pooling works like a direct connection; transaction
//! pooling, where the worker's session settings would not hold, is refused at start with
//! the cause and the fix, as is a database that does not exist: configuration errors, never
//! a pause that looks like an outage.

use crate::helpers::*;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// A PgBouncer of this test's own, in front of the local Postgres, on a free port.
struct Bouncer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Bouncer {
    async fn start(pool_mode: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("pgbouncer-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let users = dir.join("users.txt");
        std::fs::write(&users, "\"postgres\" \"\"\n").unwrap();
        // sqlx sends extra_float_digits in the startup packet; the usual setting lets it by.
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port=5432\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nauth_type = trust\nauth_file = {}\npool_mode = {pool_mode}\n\
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
        wait_for("pgbouncer listening", WAIT, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        Bouncer { child, port, dir }
    }

    fn url(&self, db: &str) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pooling_syncs_like_a_direct_connection() {
    let bouncer = Bouncer::start("session").await;
    let env = Env::new().await;
    let direct = env.store();
    let url = bouncer.url(&env.db.name);
    let env = env.set("database_url", &url);
    let worker = env.start().await;
    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    wait_for("applied through the pooler", WAIT, || async {
        row(&direct, 1).await.is_some_and(|r| r.0)
    })
    .await;
    let in_public: bool = sqlx::query_scalar("SELECT to_regclass('public.users') IS NOT NULL")
        .fetch_one(direct.pool())
        .await
        .unwrap();
    assert!(!in_public, "nothing was written outside DATABASE_SCHEMA");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling_is_refused_at_start_with_the_cause_and_the_fix() {
    let bouncer = Bouncer::start("transaction").await;
    let env = Env::new().await;
    let url = bouncer.url(&env.db.name);
    let env = env.set("database_url", &url);
    let run = env.command_within(&["run"], WAIT).await;
    assert_eq!(
        run.code, 2,
        "a configuration error: {}\n{}",
        run.stderr, run.stdout
    );
    assert!(run.stderr.contains("pool_mode = session"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_does_not_exist_is_a_configuration_error_not_an_outage() {
    let env = Env::new().await;
    let missing = format!(
        "{}/no_such_database_{}",
        pg(),
        uuid::Uuid::new_v4().simple()
    );
    let env = env.set("database_url", &missing);
    let run = env.command_within(&["run"], WAIT).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("3D000"), "{}", run.stderr);
}
