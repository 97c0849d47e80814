//! Failover with events flowing while a node fails: the quorum leader's node killed, the
//! worker's node killed and kept down, the worker's node frozen. Each measures the pause
//! (from the fault until an event published after it is in the table) and ends with the
//! table equal to the model and the DLQ empty.

use super::traffic::{EVENTS, Traffic, applied, expected, stream};
use super::*;
use crate::support::*;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    KillLeader,
    KillConnected,
    FreezeConnected,
}

/// Killing the node that leads the quorum queues pauses applying for under 5 s and loses
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster (scripts/rabbitmq-cluster.sh, TEST_RABBITMQ_CLUSTER)"]
async fn killing_the_quorum_leaders_node_loses_nothing_and_pauses_under_5_s() {
    let pause = failover(Fault::KillLeader).await;
    assert!(pause < Duration::from_secs(5), "paused {pause:?}");
}

/// Killing the node the worker consumes through: the worker resumes on another node within
/// 10 s and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster (scripts/rabbitmq-cluster.sh, TEST_RABBITMQ_CLUSTER)"]
async fn killing_the_workers_node_resumes_on_another_within_10_s() {
    let pause = failover(Fault::KillConnected).await;
    assert!(pause < Duration::from_secs(10), "paused {pause:?}");
}

/// Freezing the node the worker consumes through (its sockets open, nothing answering): the
/// heartbeats notice it and the worker resumes on another node, losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster (scripts/rabbitmq-cluster.sh, TEST_RABBITMQ_CLUSTER)"]
async fn freezing_the_workers_node_is_noticed_by_heartbeats_and_resumes_on_another() {
    let pause = failover(Fault::FreezeConnected).await;
    // lapin gives up after two silent heartbeat intervals, checked every half interval
    // (2.5 intervals at worst); then a connect and a declare on a live node.
    let heartbeat = Duration::from_secs(5);
    let bound = heartbeat * 5 / 2 + Duration::from_secs(5);
    assert!(pause < bound, "paused {pause:?}, bound {bound:?}");
}

/// Runs the stream through the cluster, inflicts `fault` a third of the way in, and
/// returns the pause it caused.
async fn failover(fault: Fault) -> Duration {
    let (cluster, _healer, env) = on_cluster().await;
    // A frozen node keeps what the queue sent its consumer, up to PREFETCH deliveries,
    // until the cluster drops the node (net_ticktime, about a minute) or it runs again:
    // those wait whatever user-sync does (README, Running on a RabbitMQ cluster). The
    // stream after the fault (about 2 000 deliveries) must outrun that window for the
    // failover itself to show; the default (6 000) would swallow all of it.
    let env = match fault {
        Fault::FreezeConnected => env.set("prefetch", "1000"),
        Fault::KillLeader | Fault::KillConnected => env,
    };
    let topo = env.topology();
    if fault != Fault::KillConnected {
        // Declared through node 2, the queues are led from there while the worker, which
        // tries node 1 first, consumes through node 1. (Frozen, a leader's node holds up
        // RabbitMQ's own consumers until the cluster drops it: see the README.)
        cluster.declare_through(2, &env).await;
    }
    let worker = Worker::spawn(env.settings());
    cluster.wait_consumers(1, &topo.queue, 1, WAIT).await;
    let connected = cluster.node_of(&address_label(worker.http).await.expect("connected"));
    let leader = cluster.leader(&topo.queue);
    let victim = match fault {
        Fault::KillLeader => leader,
        Fault::KillConnected | Fault::FreezeConnected => connected,
    };
    if fault != Fault::KillConnected {
        assert_ne!(leader, connected, "the leader is on another node");
    }
    let survivor = (1..=3).find(|n| *n != victim && *n != connected).unwrap();

    let events = stream();
    let traffic =
        Traffic::start(cluster.url(survivor), topo.exchange.clone(), events.clone()).await;
    let store = env.store();
    let third = EVENTS as i64 / 3;
    wait_for("a third of the stream applied", WAIT, || async {
        applied(&store).await >= third
    })
    .await;
    let faulted = Instant::now();
    match fault {
        Fault::KillLeader | Fault::KillConnected => cluster.kill(victim),
        Fault::FreezeConnected => cluster.freeze(victim),
    }
    // Read once the node is dead or stopped: later events cannot have gone through it.
    let first_after = traffic.newest() + 1;
    wait_for(
        "an event published after the fault applied",
        WAIT,
        || async { applied(&store).await >= first_after },
    )
    .await;
    let pause = faulted.elapsed();
    if fault == Fault::FreezeConnected {
        // Continued, the node finds its connections gone and hands back what the lost
        // session held; a freeze longer than net_ticktime would partition the cluster.
        cluster.heal().await;
    }

    traffic.finish(WAIT).await;
    let want = expected(&events);
    wait_for("table equal to the model", WAIT, || async {
        store.states().await.is_ok_and(|s| s == want)
    })
    .await;
    assert!(
        cluster.take_all(survivor, &topo.dlq).await.is_empty(),
        "no dead letters"
    );
    // Not its consumer count: a quorum queue keeps a consumer of a lost node, marked as
    // suspected down, until that node returns.
    let counts = cluster.queue_counts(survivor, &topo.queue).await;
    assert_eq!(counts.map(|c| c.0), Some(0), "the queue drained");
    let now = cluster.node_of(&address_label(worker.http).await.expect("connected again"));
    if fault != Fault::KillLeader {
        assert_ne!(now, victim, "consuming through another node");
    }
    eprintln!(
        "cluster {fault:?}: node {victim} (leader {leader}, worker on {connected}, now on {now}): \
         applying resumed {:.2} s after the fault; {} deliveries, table = model, 0 dead letters, \
         consumers {:?}",
        pause.as_secs_f64(),
        events.len(),
        counts.map(|c| c.1)
    );
    worker.stop().await;
    cluster.heal().await;
    cluster.remove(survivor, &topo).await;
    pause
}
