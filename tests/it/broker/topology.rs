//! The topology as the worker finds it at each session: queues declared again by hand,
//! replaced, deleted, or made by an older version with other arguments. Whatever it
//! finds, events keep reaching the service's queue and dead letters their DLQ.

use super::*;
use crate::support::*;
use std::time::Duration;

/// A DLQ deleted and declared again by hand (management UI, `rabbitmqadmin`) exists
/// without its binding to the dead-letter exchange: the next dead letter comes back
/// unroutable, and the next session binds it again, so the letter lands and the events
/// behind it flow. A session that only checked that queues and exchanges exist would fail
/// the same delivery for ever, reconnecting in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_declared_again_by_hand_without_its_binding_is_bound_at_the_next_session() {
    let env = Env::new().await;
    let worker = env.start().await;
    let conn = local().await;
    delete_queue(&conn, &env.dlq()).await;
    declare_queue(&conn, &env.dlq(), quorum_args()).await;
    let _ = conn.close(200, "bye".into()).await;

    let reconnected = reconnects(worker.http).await;
    let p = env.publisher().await;
    p.publish("user.created", b"not json").await;
    p.create_student(1, &["lms"]).await;
    let store = env.store();
    let dlq = env.dlq();
    let queue = env.broker.queue.clone();
    let drained = within(WAIT, || async {
        queue_counts(&dlq).await.is_some_and(|c| c.0 == 1)
            && queue_counts(&queue).await.is_some_and(|c| c.0 == 0)
            && row(&store, 1).await.is_some()
    })
    .await;
    let bounces = reconnects(worker.http).await - reconnected;
    worker.stop().await;
    assert!(
        drained,
        "the dead letter never reached the DLQ; the worker bounced {bounces} times"
    );
}

/// A main queue replaced by a script (deleted, declared with other arguments: how a queue
/// moves to another type) while the worker is away for a moment (held off here by a short
/// database outage, so the order is certain) is bound to the auth exchange again when the
/// worker comes back. Unbound, every event published from then on would be lost for this
/// service, silently, until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_main_queue_replaced_while_the_worker_is_away_is_bound_again() {
    let env = Env::new().await;
    let worker = env.start().await;
    let topo = env.topology();
    set_connections(&env.db.name, false).await;
    let conn = local().await;
    delete_queue(&conn, &topo.queue).await;
    // The worker is away once its consumer was cancelled and its session ended. Declared
    // again at once, the queue would keep the worker's consumer instead: RabbitMQ 3.10.8
    // re-attaches a quorum queue's consumer to a queue of the same name declared before
    // the channel has processed the deletion, without a `basic.cancel` (the new queue
    // counts 1 consumer, the worker is told nothing and never away), a case no
    // reconnect-time fix can see. So the declare waits for the session's end.
    wait_for("the worker's session ended", WAIT, || async {
        reconnects(worker.http).await >= 1
    })
    .await;
    let mut args = quorum_args();
    args.insert("x-dead-letter-exchange".into(), long_string(&topo.dlx));
    declare_queue(&conn, &topo.queue, args).await;
    let _ = conn.close(200, "bye".into()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    set_connections(&env.db.name, true).await;
    env.wait_consumers(1, "the worker consuming the new queue", WAIT)
        .await;

    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    let store = env.store();
    let applied = within(WAIT, || async { row(&store, 1).await.is_some() }).await;
    worker.stop().await;
    assert!(
        applied,
        "an event published to the auth exchange after the reconnect was never applied: \
         the new queue is not bound"
    );
}

/// The DLQ, the hold queue and the retry tiers deleted by an operator while the worker
/// runs: the next dead letter comes back unroutable, the session bounces, the look-up
/// finds them missing and the full declare brings them all back; the letter lands in the
/// new DLQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn satellites_deleted_while_running_come_back_at_the_next_bounce() {
    let env = Env::new().await;
    let worker = env.start().await;
    let topo = env.topology();
    let conn = local().await;
    let tiers = topo.retry_queues.iter().map(|(q, _)| q);
    for q in [&topo.dlq, &topo.hold].into_iter().chain(tiers) {
        delete_queue(&conn, q).await;
    }
    let _ = conn.close(200, "bye".into()).await;
    let p = env.publisher().await;
    p.publish("user.created", b"not json").await;
    env.wait_dead_letters(1, "the letter in the new DLQ", WAIT)
        .await;
    let tiers = topo.retry_queues.iter().map(|(q, _)| q);
    for q in [&topo.hold].into_iter().chain(tiers) {
        assert!(queue_counts(q).await.is_some(), "{q} declared again");
    }
    assert!(reconnects(worker.http).await >= 1);
    worker.stop().await;
}

/// A deployment made by the previous version, whose retry tiers are classic: the worker
/// starts (406 on each tier, used as it is), and a retried email conflict goes through
/// the classic tiers and is dead-lettered after MAX_ATTEMPTS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_retry_tiers_of_the_previous_version_still_carry_retries() {
    let env = Env::new().await;
    let topo = env.topology();
    let conn = local().await;
    for (q, delay) in &topo.retry_queues {
        declare_queue(&conn, q, classic_tier_args(&topo, *delay)).await;
    }
    let _ = conn.close(200, "bye".into()).await;
    let worker = env.start().await;
    let p = env.publisher().await;
    p.email_clash().await;
    env.wait_dead_letters(1, "the conflict dead-lettered after its retries", WAIT)
        .await;
    let letters = env.dead_letters().await;
    assert_dead_letter(&letters[0], "email_conflict", 3);
    worker.stop().await;
}

/// A queue made earlier with other arguments (classic, no dead-letter exchange) is used as
/// it is: no crash on PRECONDITION_FAILED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_queue_with_other_arguments_is_used_as_it_is() {
    let env = Env::new().await;
    {
        let conn = lapin::Connection::connect(&amqp(), Default::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let opts = lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(env.broker.queue.as_str().into(), opts, Default::default())
            .await
            .unwrap();
        let _ = conn.close(200, "bye".into()).await;
    }
    let worker = env.start().await;
    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    let store = env.store();
    wait_for("applied through the pre-existing queue", WAIT, || async {
        row(&store, 1).await.is_some()
    })
    .await;
    worker.stop().await;
}
