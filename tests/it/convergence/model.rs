//! Model-based tests with failure injection: random histories published in any order with
//! duplicates, through one or two real workers at any batch size, with one batch or more
//! in flight (`PIPELINE_DEPTH`), with events that fail (an email another user keeps for
//! good or frees later, a row the backend's trigger refuses, poison bodies, timestamps out
//! of range), signing on or off, and the mass-deactivation brake engaging and being
//! released. Whatever happens, the table must equal the model (timestamp order over the
//! events that were not dead-lettered), nothing may be acknowledged unapplied, and every
//! failure must end in the DLQ with its reason.

use super::histories::*;
use crate::support::*;
use proptest::test_runner::{Config, TestRunner};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

async fn run_case(history: &[Message], order: &[usize], setup: Setup) {
    let (env, squatter_plan) = case_env(&setup).await;

    let mut workers = Vec::new();
    for _ in 0..setup.replicas {
        workers.push(env.start().await);
    }
    let p = env.publisher().await;
    for &i in order {
        publish(&p, &history[i], setup.signed).await;
    }
    let mut expected = order.len() as f64;
    settle(&workers, expected).await;
    if setup.brake > 0 && final_count(&workers, "held").await > 0.0 {
        let released = user_sync::ops::brake::release(&env.settings())
            .await
            .unwrap();
        expected += released.moved as f64;
        eprintln!(
            "model: {setup:?}: released {} held deactivations",
            released.moved
        );
        settle(&workers, expected).await;
        assert_eq!(
            queue_counts(&env.hold()).await.map(|c| c.0),
            Some(0),
            "a release leaves nothing parked"
        );
    }
    for w in workers {
        w.stop().await;
    }
    check(&env, history, order, squatter_plan).await;
}

/// Waits until the workers have given `expected` deliveries a final fate.
async fn settle(workers: &[Worker], expected: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let settled = settled(workers).await;
        if settled == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "settled {settled} of {expected} deliveries"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `MODEL_CASES` cases (default 24), each with one of `depths` batches in flight per worker.
fn run_model(depths: &'static [usize]) {
    // 24 cases keep CI near half a minute; MODEL_CASES=500 for a deeper hunt.
    run_cases(depths, 24, |history, order, setup| async move {
        run_case(&history, &order, setup).await
    });
}

/// Runs `case` on `MODEL_CASES` random cases (default `default_cases`), each with one of
/// `depths` batches in flight per worker.
pub(crate) fn run_cases<F, Fut>(depths: &'static [usize], default_cases: u32, case: F)
where
    F: Fn(Vec<Message>, Vec<usize>, Setup) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cases =
        std::env::var("MODEL_CASES").map_or(default_cases, |n| n.parse().expect("MODEL_CASES"));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&arb_case(depths), |(history, order, setup)| {
            rt.block_on(case(history, order, setup));
            Ok(())
        })
        .unwrap();
}

/// Random histories with failures, one batch in flight per worker: the table equals the
/// model and every failure is in the DLQ with its reason.
#[test]
fn random_histories_with_failures_end_in_the_model_and_the_dlq() {
    run_model(&[1]);
}

/// The same with two or three batches in flight (the default): one commits while the next
/// are applied, with the same users in several, failures isolated in any, the brake
/// deciding in between.
#[test]
fn random_histories_with_batches_in_flight_end_in_the_model_and_the_dlq() {
    run_model(&[2, 3]);
}
