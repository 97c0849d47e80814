//! The model test with faults it leaves out: rows the backend had without an auth id,
//! database sessions killed and a broker connection cut mid-stream, three batches in
//! flight.

use super::histories::*;
use super::model::run_cases;
use crate::support::*;
use sqlx::{Connection, PgConnection};
use std::time::Duration;

/// Random histories (the model test's: duplicates, any order, email conflicts, a refusing
/// trigger, poison bodies, signing, the brake) through one or two workers with three
/// batches in flight each, with what the model test leaves out: rows the backend had
/// without an auth id (an active one with the contested email, inserted before and during
/// the stream; inactive ones with each user's email, mid-stream), every worker database
/// session killed mid-stream, and one worker's broker connection cut mid-stream. The
/// table must still equal the model.
#[test]
fn random_histories_with_backend_rows_and_faults_at_depth_three_end_in_the_model() {
    run_cases(&[3], 12, |history, order, setup| async move {
        faulty_case(&history, &order, setup).await
    });
}

async fn backend_row(env: &Env, email: &str, active: bool) {
    // Refused (and skipped) while an active row holds the email.
    sqlx::query(
        "INSERT INTO users (email, first_name, last_name, role, is_active) \
         VALUES ($1, 'Old', 'Name', 'student', $2) ON CONFLICT DO NOTHING",
    )
    .bind(email)
    .bind(active)
    .execute(env.store().pool())
    .await
    .unwrap();
}

async fn faulty_case(history: &[Message], order: &[usize], setup: Setup) {
    let proxy = BrokerProxy::start().await;
    let (env, squatter_plan) = case_env(&setup).await;
    backend_row(&env, &SHARED.to_uppercase(), true).await;
    let start = |first: bool| {
        let mut settings = env.settings();
        if first {
            let vars: std::collections::HashMap<String, String> = env
                .vars()
                .into_iter()
                .chain([("rabbitmq_url".to_string(), proxy.url())])
                .collect();
            settings =
                user_sync::settings::Settings::from_lookup(|k| vars.get(k).cloned()).unwrap();
        }
        env.start_with(settings)
    };
    let mut workers = Vec::new();
    for r in 0..setup.replicas {
        workers.push(start(r == 0).await);
    }
    let p = env.publisher().await;
    let third = order.len() / 3;
    for (n, &i) in order.iter().enumerate() {
        if n == third {
            backend_row(&env, SHARED, true).await;
            for u in 1..=5u8 {
                backend_row(&env, &format!("user{u}@example.com"), false).await;
            }
            let kill = format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' \
                 AND application_name = 'user-sync'",
                env.db.name
            );
            let mut admin = PgConnection::connect(&format!("{}/postgres", pg()))
                .await
                .unwrap();
            sqlx::query(&kill).execute(&mut admin).await.unwrap();
        }
        if n == 2 * third {
            proxy.close().await;
            proxy.reopen();
        }
        publish(&p, &history[i], setup.signed).await;
    }
    // Settled: every delivery has had a final fate, nothing waits in the queues, and
    // stopping the workers hands nothing back (else they start again).
    let topo = env.topology();
    let mut released = false;
    for _round in 0..10 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if settled(&workers).await >= order.len() as f64 && quiet(&topo).await {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never settled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if setup.brake > 0 && !released && final_count(&workers, "held").await > 0.0 {
            released = true;
            user_sync::ops::brake::release(&env.settings())
                .await
                .unwrap();
            continue;
        }
        for w in workers.drain(..) {
            w.stop().await;
        }
        if stays_quiet(&topo).await {
            break;
        }
        for r in 0..setup.replicas {
            workers.push(start(r == 0).await);
        }
    }
    assert!(workers.is_empty(), "the queues never emptied");
    if released {
        assert_eq!(
            queue_counts(&env.hold()).await.map(|c| c.0),
            Some(0),
            "a release leaves nothing parked"
        );
    }
    // A session lost before its acks hands back batches already settled: their dead
    // letters are published again (the contract's "duplicates, never loses").
    check_with(&env, history, order, squatter_plan, true).await;
}

/// Nothing ready in the main queue or a retry tier for a second on end: a copy whose retry
/// delay ran out is in neither while RabbitMQ dead-letters it back (at least once, through
/// its own worker), and a copy landing after the workers stopped would be left unapplied.
async fn stays_quiet(topo: &user_sync::broker::Topology) -> bool {
    for _ in 0..5 {
        if !quiet(topo).await {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    true
}

/// Nothing ready in the main queue or a retry tier.
async fn quiet(topo: &user_sync::broker::Topology) -> bool {
    let retries = topo.retry_queues.iter().map(|(q, _)| q);
    for q in std::iter::once(&topo.queue).chain(retries) {
        if queue_counts(q).await.is_none_or(|c| c.0 > 0) {
            return false;
        }
    }
    true
}
