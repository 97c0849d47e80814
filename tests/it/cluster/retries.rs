//! Retries, dead letters and parked deactivations through a node's death: whatever was
//! on its way waits or moves to another node, and nothing is lost.

use super::*;
use crate::support::*;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use std::time::Duration;

/// The previous version's deployment on a cluster, its classic retry tiers kept by the
/// upgrade (homed on node 3, which declared them), the worker consuming through node 1,
/// node 3 killed: a retry for a tier whose node is down comes back as NO_ROUTE (RabbitMQ
/// 3.10 does not route to it), the delivery is not acknowledged, and every session fails
/// its look-up until node 3 returns. The worker stops, as the CHANGELOG warns, and loses
/// nothing: the conflict waits in the main queue, and is retried and dead-lettered once
/// node 3 is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster (scripts/rabbitmq-cluster.sh, TEST_RABBITMQ_CLUSTER)"]
async fn a_kept_classic_retry_tier_on_a_dead_node_stops_the_worker_and_loses_nothing() {
    let (cluster, _healer, env) = on_cluster().await;
    let topo = env.topology();
    let node3 = cluster.connect(3).await;
    for (q, delay) in &topo.retry_queues {
        declare_queue(&node3, q, classic_tier_args(&topo, *delay)).await;
    }
    let _ = node3.close(200, "bye".into()).await;
    let worker = start_on_cluster(&env, &cluster).await;
    assert_eq!(
        address_label(worker.http).await.as_deref(),
        Some(cluster.addresses[0].as_str())
    );
    cluster.kill(3);

    let url = cluster.url(2);
    Publisher::connect(&url, &topo.exchange)
        .await
        .email_clash()
        .await;
    let store = env.store();
    wait_for("the owner applied", WAIT, || async {
        row(&store, 1).await.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let main = cluster.queue_counts(1, &topo.queue).await;
    cluster.heal().await;
    // Node 3 back: whatever waited (in the main queue, or in the tiers) goes on, and the
    // conflict ends in the DLQ after MAX_ATTEMPTS.
    let dlq = topo.dlq.clone();
    let lettered = tokio::time::timeout(WAIT, async {
        wait_for("the conflict dead-lettered", WAIT, || async {
            cluster
                .queue_counts(1, &dlq)
                .await
                .is_some_and(|c| c.0 == 1)
        })
        .await
    })
    .await;
    let tiers: Vec<_> = {
        let mut v = Vec::new();
        for (q, _) in &topo.retry_queues {
            v.push(cluster.queue_counts(1, q).await);
        }
        v
    };
    worker.stop().await;
    cluster.remove(1, &topo).await;
    assert!(
        lettered.is_ok(),
        "the email conflict vanished: main queue while node 3 was down {main:?}, tiers now \
         {tiers:?}, DLQ empty"
    );
    assert_eq!(
        main.map(|c| c.0),
        Some(1),
        "the conflict waited in the main queue while node 3 was down"
    );
}

/// A retry waiting in a quorum tier when the node leading the tier and the main queue is
/// killed: the tier elects a leader, its at-least-once dead-lettering hands the expired
/// retry back to the main queue, and the conflict is retried once more and dead-lettered,
/// its routing key kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster (scripts/rabbitmq-cluster.sh, TEST_RABBITMQ_CLUSTER)"]
async fn a_retry_waiting_in_a_quorum_tier_survives_its_leaders_node() {
    let (cluster, _healer, env) = on_cluster().await;
    let env = env.set("retry_delays_ms", "4000").set("max_attempts", "2");
    let topo = env.topology();
    cluster.declare_through(2, &env).await;
    let tier = topo.retry_queues[0].0.clone();
    let worker = start_on_cluster(&env, &cluster).await;
    assert_eq!(cluster.leader(&tier), 2, "the tier is led from node 2");
    let url = cluster.url(1);
    Publisher::connect(&url, &topo.exchange)
        .await
        .email_clash()
        .await;
    wait_for("the retry waiting in its tier", WAIT, || async {
        cluster
            .queue_counts(1, &tier)
            .await
            .is_some_and(|c| c.0 == 1)
    })
    .await;
    cluster.kill(2);
    let dlq = topo.dlq.clone();
    let lettered = within(WAIT, || async {
        cluster
            .queue_counts(1, &dlq)
            .await
            .is_some_and(|c| c.0 == 1)
    })
    .await;
    let letters = if lettered {
        cluster.take_all(1, &dlq).await
    } else {
        Vec::new()
    };
    worker.stop().await;
    cluster.heal().await;
    cluster.remove(1, &topo).await;
    assert!(lettered, "the retry never came back from its tier");
    assert_eq!(
        header(&letters[0], "x-routing-key").as_deref(),
        Some("user.created")
    );
    assert_eq!(letters[0].routing_key.as_str(), "user.created");
}

/// Dead letters and parked deactivations published while the worker's node is killed:
/// the confirms of the lost session fail, its deliveries come back, and every one ends in
/// the DLQ or the hold queue on another node (some twice, none missing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster (scripts/rabbitmq-cluster.sh, TEST_RABBITMQ_CLUSTER)"]
async fn dead_letters_and_held_deactivations_survive_the_workers_node_dying() {
    const BAD: usize = 1500;
    let (cluster, _healer, env) = on_cluster().await;
    let env = env.set("deactivation_brake", "1");
    let topo = env.topology();
    let worker = start_on_cluster(&env, &cluster).await;
    let url = cluster.url(2);
    let (conn, ch) = confirming(&url).await;
    let mut confirms = Vec::new();
    for i in 0..BAD {
        let (key, body) = if i % 2 == 0 {
            ("user.created", format!("bad {i}"))
        } else {
            let mut e = event(
                "user.deleted",
                1,
                "2024-01-01T00:00:00Z",
                "student",
                &["lms"],
            );
            let id = uuid::Uuid::from_u128(i as u128).to_string();
            e["user_id"] = id.clone().into();
            e["user"]["id"] = id.into();
            ("user.deleted", e.to_string())
        };
        confirms.push(
            ch.basic_publish(
                topo.exchange.as_str().into(),
                key.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(c.await.unwrap().is_ack());
    }
    let _ = conn.close(200, "bye".into()).await;
    wait_for("dead-lettering under way", WAIT, || async {
        cluster
            .queue_counts(2, &topo.dlq)
            .await
            .is_some_and(|c| c.0 >= 50)
    })
    .await;
    let at_kill = cluster.queue_counts(2, &topo.dlq).await;
    cluster.kill(1);
    wait_for("the main queue drained", WAIT, || async {
        cluster
            .queue_counts(2, &topo.queue)
            .await
            .is_some_and(|c| c.0 == 0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let letters = cluster.take_all(2, &topo.dlq).await;
    let held = cluster.take_all(2, &topo.hold).await;
    worker.stop().await;
    cluster.heal().await;
    cluster.remove(2, &topo).await;
    let mut seen = std::collections::BTreeSet::new();
    for d in letters.iter().chain(held.iter()) {
        seen.insert(String::from_utf8_lossy(&d.data).into_owned());
    }
    let bad = (0..BAD).filter(|i| i % 2 == 0).count();
    let deletions = BAD - bad;
    let got_bad = seen.iter().filter(|s| s.starts_with("bad ")).count();
    let got_deletions = seen.len() - got_bad;
    eprintln!(
        "node killed with {at_kill:?} in the DLQ; {} letters and {} held in the end, \
         {got_bad} distinct bad bodies, {got_deletions} distinct deletions",
        letters.len(),
        held.len()
    );
    assert_eq!(got_bad, bad, "dead letters");
    // The brake admits one deactivation; one more may be applied per replayed batch.
    assert!(
        got_deletions + 3 >= deletions,
        "{got_deletions} of {deletions} deactivations parked"
    );
}
