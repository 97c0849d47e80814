//! The convergence rule through the real SQL: any order, any duplicates, any batching, two
//! batches applied at once and two replicas give the table that timestamp order gives
//! (`decide::converge`).

use crate::support::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::time::Duration;
use user_sync::decide::{self, Planned};

/// Events of users 1 to 4, staff or students, under two names.
fn arb_plain_event() -> impl Strategy<Value = serde_json::Value> {
    arb_event(Shape {
        users: 4,
        seconds: 4,
        roles: &["student", "teacher"],
        names: &["Name0", "Name1"],
    })
}

/// What the service plans for `e` with the default staff roles.
fn planned(e: &serde_json::Value) -> Planned {
    plan_as(e, &default_membership())
}

/// Histories of up to 15 events, an arrival order with duplicates, and a batch size.
fn arb_arrivals() -> impl Strategy<Value = (Vec<serde_json::Value>, Vec<usize>, usize)> {
    prop::collection::vec(arb_plain_event(), 1..16).prop_flat_map(|history| {
        let n = history.len();
        let order = prop::collection::vec(0..n, 0..n).prop_flat_map(move |extra| {
            let all: Vec<usize> = (0..n).chain(extra).collect();
            Just(all).prop_shuffle()
        });
        (Just(history), order, 1usize..6)
    })
}

async fn apply_chunk(store: &user_sync::store::Store, chunk: &[Planned]) {
    let (users, _) = decide::reduce(chunk);
    let results = store.apply(chunk, &users).await.unwrap();
    assert!(
        results
            .iter()
            .all(|(_, r)| matches!(r, user_sync::store::EventResult::Done(_)))
    );
}

/// The arrivals cut into batches, `at_once` of them applied concurrently (each on a
/// connection of its own, as the batches in flight of a worker are), against the model.
fn through_sql_in_batches(at_once: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _context = rt.enter();
    let env = rt.block_on(Env::new());
    let store = env.store();
    rt.block_on(store.migrate()).unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 40,
        ..Config::default()
    });
    runner
        .run(&arb_arrivals(), |(history, order, batch)| {
            let history: Vec<Planned> = history.iter().map(planned).collect();
            let expected = decide::converge(&history);
            let actual = rt.block_on(async {
                sqlx::query("TRUNCATE users, user_watermarks")
                    .execute(store.pool())
                    .await
                    .unwrap();
                let arrivals: Vec<Planned> = order.iter().map(|&i| history[i].clone()).collect();
                for wave in arrivals.chunks(batch * at_once) {
                    let batches = wave.chunks(batch).map(|c| apply_chunk(&store, c));
                    futures_util::future::join_all(batches).await;
                }
                store.states().await.unwrap()
            });
            prop_assert_eq!(actual, expected);
            Ok(())
        })
        .unwrap();
}

/// Random histories applied through the real SQL in any order, with duplicates, cut into
/// batches of any size, leave the table that timestamp order gives.
#[test]
fn any_order_duplicates_and_batching_through_sql_match_timestamp_order() {
    through_sql_in_batches(1);
}

/// The same with two batches applied at once on two connections, as two batches in flight
/// are.
#[test]
fn two_batches_applied_at_once_through_sql_match_timestamp_order() {
    through_sql_in_batches(2);
}

/// Two worker replicas on one queue, fed a shuffled stream with duplicates, end in the
/// state that timestamp order gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_queue_converge() {
    two_replicas_converge(1).await;
}

/// The same with two batches in flight in each replica: four transactions at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_two_batches_in_flight_each_converge() {
    two_replicas_converge(2).await;
}

async fn two_replicas_converge(depth: usize) {
    let env = Env::new()
        .await
        .set("batch_size", "7")
        .set("pipeline_depth", &depth.to_string());
    let a = env.start().await;
    let b = env.start().await;
    let p = env.publisher().await;
    let mut runner = TestRunner::deterministic();
    let history = prop::collection::vec(arb_plain_event(), 300)
        .new_tree(&mut runner)
        .unwrap();
    let history = proptest::strategy::ValueTree::current(&history);
    for e in replayed_out_of_order(&history) {
        p.publish_json(e).await;
    }
    let planned: Vec<Planned> = history.iter().map(planned).collect();
    let expected = decide::converge(&planned);
    let store = env.store();
    wait_depth(
        &env.broker.queue,
        0,
        "queue drained",
        Duration::from_secs(30),
    )
    .await;
    wait_for("table converged", Duration::from_secs(30), || async {
        store.states().await.is_ok_and(|s| s == expected)
    })
    .await;
    a.stop().await;
    b.stop().await;
}
