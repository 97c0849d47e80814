//! The worker on a real three-node RabbitMQ cluster (`scripts/rabbitmq-cluster.sh`) while
//! a node fails: failover with events flowing, retries and dead letters through node
//! losses, the commands with a node frozen.
//!
//! Ignored in the plain run because they need the cluster; `.ci/run` starts it, sets
//! `TEST_RABBITMQ_CLUSTER` and runs them with `--ignored`, one at a time. Without the
//! variable they fail rather than skip.

mod commands;
mod failover;
pub(crate) mod nodes;
mod retries;
mod traffic;

use crate::support::*;
use nodes::Cluster;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The cluster made whole (a test that failed before may have left a node down or
/// frozen), a `Healer` that makes it whole again however the test ends, and an
/// environment on it: the URL's host is ignored once RABBITMQ_ADDRESSES names the nodes,
/// and the brake is off (the streams deactivate more users than it allows; it is not
/// under test here).
async fn on_cluster() -> (Cluster, Healer, Env) {
    let cluster = Cluster::from_env();
    cluster.heal().await;
    let env = Env::new()
        .await
        .set("rabbitmq_url", "amqp://guest:guest@ignored.invalid/%2f")
        .set("rabbitmq_addresses", &cluster.addresses.join(","))
        .set("deactivation_brake", "0");
    (cluster, Healer, env)
}

/// Continues frozen nodes and restarts dead ones when dropped, so that a test failing
/// midway leaves the cluster whole for the next.
struct Healer;

impl Drop for Healer {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq-cluster.sh");
        let _ = std::process::Command::new(script)
            .arg("heal")
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// The in-process worker on the cluster; returns once the cluster, asked through node 2,
/// counts its consumer.
async fn start_on_cluster(env: &Env, cluster: &Cluster) -> Worker {
    let worker = Worker::spawn(env.settings());
    let queue = env.topology().queue;
    cluster.wait_consumers(2, &queue, 1, WAIT).await;
    worker
}
