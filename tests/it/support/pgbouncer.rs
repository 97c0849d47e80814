//! A PgBouncer of a test's own, the pooler many teams put before Postgres.

use super::{free_port, wait_for};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A PgBouncer of a test's own in front of the Postgres on `server_port`, in `pool_mode`
/// (Debian's `pgbouncer`, installed by `.ci/run`); stopped and removed on drop.
pub(crate) struct Bouncer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Bouncer {
    pub(crate) async fn start(server_port: u16, pool_mode: &str) -> Self {
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

    pub(crate) fn url(&self, db: &str) -> String {
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
