//! The three-node cluster of `scripts/rabbitmq-cluster.sh`, as the tests see it: its
//! addresses from `TEST_RABBITMQ_CLUSTER`, its nodes killed, frozen and healed through the
//! script, and plain AMQP connections to one node at a time.

use crate::support::{
    Env, connect, delete_all, get_all_at, names_of, queue_counts_at, script, wait_consumers,
};
use lapin::Connection;
use std::time::Duration;
use user_sync::broker::{Session, Topology};
use user_sync::settings::BrokerAddress;

/// Node `n` (1-based) is the n-th address of `TEST_RABBITMQ_CLUSTER`, in the script's order.
pub struct Cluster {
    pub addresses: Vec<String>,
}

impl Cluster {
    /// The running cluster; fails the test when there is none, so CI cannot skip it.
    pub fn from_env() -> Self {
        let list = std::env::var("TEST_RABBITMQ_CLUSTER").unwrap_or_default();
        assert!(
            !list.is_empty(),
            "TEST_RABBITMQ_CLUSTER is not set: run `scripts/rabbitmq-cluster.sh start` and set \
             TEST_RABBITMQ_CLUSTER=$(scripts/rabbitmq-cluster.sh addresses) (.ci/run does both)"
        );
        let cluster = Self {
            addresses: list.split(',').map(|a| a.trim().to_string()).collect(),
        };
        assert_eq!(
            cluster_script(&["addresses"]).trim(),
            cluster.addresses.join(","),
            "TEST_RABBITMQ_CLUSTER must be the script's cluster: its nodes are killed through it"
        );
        cluster
    }

    pub fn url(&self, node: usize) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addresses[node - 1])
    }

    /// Node `node` as the one entry of RABBITMQ_ADDRESSES.
    pub fn address(&self, node: usize) -> BrokerAddress {
        let (host, port) = self.addresses[node - 1].rsplit_once(':').unwrap();
        BrokerAddress {
            host: host.into(),
            port: port.parse().unwrap(),
        }
    }

    /// Declares `env`'s topology through `node` alone, so its quorum queues are led from
    /// there.
    pub async fn declare_through(&self, node: usize, env: &Env) {
        let mut settings = env.settings();
        settings.rabbitmq_addresses = vec![self.address(node)];
        Session::open(&settings, &env.topology())
            .await
            .unwrap()
            .close()
            .await;
    }

    /// Which node an address (`host:port`) is.
    pub fn node_of(&self, address: &str) -> usize {
        1 + self
            .addresses
            .iter()
            .position(|a| a == address)
            .unwrap_or_else(|| panic!("{address} is not a node of the cluster"))
    }

    /// SIGKILL of the node's Erlang VM: a crash, no goodbye to anyone.
    pub fn kill(&self, node: usize) {
        cluster_script(&["kill", &node.to_string()]);
    }

    /// SIGSTOP: the node's sockets stay open and nothing answers, as a hung or cut-off host.
    pub fn freeze(&self, node: usize) {
        cluster_script(&["freeze", &node.to_string()]);
    }

    /// Continues frozen nodes and restarts dead ones; returns once all three run.
    pub async fn heal(&self) {
        tokio::task::spawn_blocking(|| cluster_script(&["heal"]))
            .await
            .unwrap();
    }

    /// The node leading quorum queue `queue`.
    pub fn leader(&self, queue: &str) -> usize {
        cluster_script(&["leader", queue])
            .trim()
            .parse()
            .expect("a node number")
    }

    pub async fn connect(&self, node: usize) -> Connection {
        connect(&self.url(node)).await
    }

    /// (messages ready, consumers) of `queue`, asked of `node`; None if it cannot say.
    pub async fn queue_counts(&self, node: usize, queue: &str) -> Option<(u32, u32)> {
        queue_counts_at(&self.url(node), queue).await
    }

    pub async fn wait_consumers(&self, node: usize, queue: &str, n: u32, limit: Duration) {
        let what = "consumers on the cluster queue";
        wait_consumers(&self.url(node), queue, n, what, limit).await;
    }

    /// Takes every message of `queue` through `node` (acked: the queue is left empty).
    pub async fn take_all(&self, node: usize, queue: &str) -> Vec<lapin::message::Delivery> {
        get_all_at(&self.url(node), queue).await
    }

    /// Deletes a test's queues and exchanges, through `node`.
    pub async fn remove(&self, node: usize, topo: &Topology) {
        let conn = self.connect(node).await;
        let (queues, exchanges) = names_of(topo);
        delete_all(&conn, &queues, &exchanges).await;
        let _ = conn.close(200, "bye".into()).await;
    }
}

/// Runs the cluster script; its stdout, or the test fails with its stderr.
fn cluster_script(args: &[&str]) -> String {
    script("rabbitmq-cluster.sh", args)
}
