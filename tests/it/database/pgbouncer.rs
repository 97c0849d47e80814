//! Through PgBouncer (Debian's `pgbouncer`, installed by `.ci/run`): session pooling works
//! like a direct connection; transaction pooling, where the worker's session settings
//! would not hold, is refused at start with the cause and the fix, as is a database that
//! does not exist: configuration errors, never a pause that looks like an outage. A
//! database down behind the pooler is an outage.

use super::*;
use crate::support::*;
use std::process::Stdio;
use std::time::Duration;

/// Through PgBouncer in session pooling the worker syncs as over a direct connection and
/// writes nothing outside DATABASE_SCHEMA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pooling_syncs_like_a_direct_connection() {
    let bouncer = Bouncer::start(5432, "session").await;
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

/// Through PgBouncer in transaction pooling, where the worker's session settings would not
/// hold, the worker exits 2 at start, saying to use `pool_mode = session`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling_is_refused_at_start_with_the_cause_and_the_fix() {
    let bouncer = Bouncer::start(5432, "transaction").await;
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

/// A database that does not exist (3D000) is a configuration error, exit 2, not an outage
/// the worker would wait on for ever.
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

/// A database down behind PgBouncer at start is waited for, not exit 2, although
/// PgBouncer reports its own troubles ("pgbouncer cannot connect to server",
/// query_wait_timeout) with 08P01, a SQLSTATE that otherwise names a configuration error:
/// the pooler queues the login, and the pool's acquire timeout turns it into a pause
/// before any 08P01 arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_down_behind_pgbouncer_at_start_is_an_outage_not_a_configuration_error() {
    // Nothing listens on this port: the database behind the pooler is down.
    let bouncer = Bouncer::start(free_port(), "session").await;
    let env = Env::new().await;
    let url = bouncer.url(&env.db.name);
    let env = env.set("database_url", &url);
    let mut child = env
        .binary()
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let exited = child.try_wait().unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        exited.is_none(),
        "exited {exited:?} while the database behind the pooler was down, instead of \
         waiting for it:\n{stderr}"
    );
}
