//! The worker's start and the operator's commands while a node is frozen or dies under
//! them.

use super::*;
use crate::support::*;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use std::time::Duration;
use tokio::time::Instant;
use user_sync::broker::Session;

/// While one node of the cluster is frozen (none of the processes connects through it), a
/// starting worker is ready and `send` finishes within 15 s, as `dlq list` (which only
/// looks) does: a start or a command looks the topology up, declares only what is
/// missing and waits 1 s at most for bindings, which wait for a frozen node until the
/// cluster drops it (45-75 s). A restart or a rollout during the incident, and the
/// operator's commands, must not hang that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster (scripts/rabbitmq-cluster.sh, TEST_RABBITMQ_CLUSTER)"]
async fn a_frozen_node_holds_up_neither_a_starting_worker_nor_the_commands() {
    let (cluster, _healer, env) = on_cluster().await;
    let topo = env.topology();
    // The topology exists already: nothing needs binding, only looking up.
    Session::open(&env.settings(), &topo)
        .await
        .unwrap()
        .close()
        .await;
    let healer = Healer;
    cluster.freeze(3);
    let limit = Duration::from_secs(15);
    let id = uid(4).to_string();
    let args = [
        "send",
        "--type",
        "created",
        "--email",
        "f@example.com",
        "--role",
        "teacher",
        "--user-id",
        &id,
    ];
    let mut send = env.binary();
    send.args(args);
    let send = run_bounded(send, limit);
    let start = async {
        let started = Instant::now();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let app = user_sync::build(env.settings()).unwrap();
        let http = app.http_addr();
        let task = tokio::spawn(user_sync::run(app, shutdown.clone()));
        let ready = within(limit, || async { http_get(http, "/readyz").await.0 == 200 }).await;
        let took = started.elapsed();
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        (ready, took)
    };
    // The control: `dlq list` connects and looks up only, through the same node.
    let mut list = env.binary();
    list.args(["dlq", "list"]);
    let list = run_bounded(list, limit);
    let (sent, (ready, took), listed) = tokio::join!(send, start, list);
    drop(healer);
    cluster.remove(1, &topo).await;
    let listed = listed.expect("`dlq list`, which only looks, finishes meanwhile");
    assert_eq!(listed.code, 0, "{}", listed.text());
    let send_ok = sent.as_ref().is_some_and(|r| r.code == 0);
    assert!(
        ready && send_ok,
        "worker ready within 15 s: {ready} ({took:?}); send: {}",
        sent.map_or("did not finish within 15 s".into(), |r| format!(
            "exit {}: {}",
            r.code,
            r.text()
        ))
    );
}

/// `dlq replay` whose node is killed midway, run again, reaches another node and moves
/// the rest. Nothing is lost (a letter whose copy was confirmed but whose ack died with
/// the node is replayed twice, harmlessly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster (scripts/rabbitmq-cluster.sh, TEST_RABBITMQ_CLUSTER)"]
async fn dlq_replay_cut_by_its_nodes_death_loses_nothing_when_run_again() {
    const LETTERS: usize = 1500;
    let (cluster, _healer, env) = on_cluster().await;
    let topo = env.topology();
    cluster.declare_through(2, &env).await;
    // Dead letters of created events, each for a user of its own, through node 2.
    let (conn, ch) = confirming(&cluster.url(2)).await;
    let mut confirms = Vec::new();
    for i in 0..LETTERS {
        let mut e = created(1);
        let id = uuid::Uuid::new_v4().to_string();
        e["user_id"] = id.clone().into();
        e["user"]["id"] = id.into();
        e["user"]["email"] = format!("letter{i}@example.com").into();
        let mut headers = FieldTable::default();
        headers.insert("x-error-kind".into(), long_string("email_conflict"));
        headers.insert("x-attempts".into(), AMQPValue::LongLongInt(5));
        confirms.push(
            ch.basic_publish(
                topo.dlx.as_str().into(),
                "user.created".into(),
                BasicPublishOptions::default(),
                e.to_string().as_bytes(),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_headers(headers),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(c.await.unwrap().is_ack());
    }
    let _ = conn.close(200, "bye".into()).await;

    // The replay connects to node 1 (first in the list); node 1 dies under it.
    let mut replay = env.binary();
    replay.args(["dlq", "replay"]);
    let child = tokio::task::spawn_blocking(move || replay.output().unwrap());
    wait_for("part of the DLQ replayed", WAIT, || async {
        cluster
            .queue_counts(2, &topo.queue)
            .await
            .is_some_and(|c| c.0 >= 100)
    })
    .await;
    cluster.kill(1);
    let first = tokio::time::timeout(WAIT, child)
        .await
        .expect("the interrupted replay ends")
        .unwrap();
    let again = env.command_within(&["dlq", "replay"], WAIT).await;
    let worker = start_on_cluster(&env, &cluster).await;
    let store = env.store();
    let applied = tokio::time::timeout(WAIT, async {
        wait_for("every letter applied", WAIT, || async {
            count(&store, "SELECT count(*) FROM users").await == LETTERS as i64
        })
        .await
    })
    .await;
    let users = count(&store, "SELECT count(*) FROM users").await;
    let left = cluster.queue_counts(2, &topo.dlq).await;
    eprintln!(
        "replay cut: exit {:?} {}{}; again: exit {} {}",
        first.status.code(),
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr),
        again.code,
        again.text()
    );
    worker.stop().await;
    cluster.heal().await;
    cluster.remove(2, &topo).await;
    assert!(
        applied.is_ok(),
        "{users} of {LETTERS} applied, DLQ {left:?}; first replay exit {:?}: {}; second: {}",
        first.status.code(),
        String::from_utf8_lossy(&first.stderr),
        again.text()
    );
}
