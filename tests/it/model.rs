//! Model-based test with failure injection: random histories of several users published
//! in any order with duplicates, through one or two real workers at any batch size, with
//! one batch or two in flight (`PIPELINE_DEPTH`), with
//! events that fail (an email another user keeps for good or frees later, a row the
//! backend's trigger refuses, poison bodies, timestamps out of range), signing on or off,
//! and the mass-deactivation brake engaging and being released. Whatever happens, the
//! table must equal the model (timestamp order over the events that were not
//! dead-lettered), nothing may be acknowledged unapplied, and every failure must end in
//! the DLQ with its reason.

use crate::helpers::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::HashMap;
use std::time::Duration;
use user_sync::decide::{self, Planned};

const WAIT: Duration = Duration::from_secs(60);
/// Held by user 9 from the start, for good: an event taking it never succeeds.
pub(crate) const TAKEN: &str = "taken@example.com";
/// Wanted by several users of the history: a conflict that may resolve or not.
pub(crate) const SHARED: &str = "shared@example.com";
/// What the backend's trigger refuses (SQLSTATE P0001).
const REFUSED: &str = "Refused";

#[derive(Debug, Clone)]
pub(crate) enum Message {
    /// A well-formed event: its id (unique in the history) and body.
    Event(String, serde_json::Value),
    /// A body that can never be applied.
    Poison(&'static str, Vec<u8>),
}

impl Message {
    pub(crate) fn routing_key(&self) -> &str {
        match self {
            Message::Event(_, e) => e["event_type"].as_str().unwrap(),
            Message::Poison(key, _) => key,
        }
    }

    pub(crate) fn body(&self) -> Vec<u8> {
        match self {
            Message::Event(_, e) => e.to_string().into_bytes(),
            Message::Poison(_, b) => b.clone(),
        }
    }
}

fn arb_event() -> impl Strategy<Value = serde_json::Value> {
    let email = prop::sample::select(vec![None, None, None, None, Some(TAKEN), Some(SHARED)]);
    let name = prop::sample::select(vec!["A", "B", "A", "B", REFUSED]);
    (
        (1u8..=5, 0u32..6),
        prop::sample::select(vec!["user.created", "user.updated", "user.deleted"]),
        prop::sample::select(vec!["student", "teacher"]),
        prop::sample::subsequence(vec!["lms", "sat"], 0..=2),
        (any::<bool>(), email, name),
    )
        .prop_map(
            |((user, sec), kind, role, services, (active, email, name))| {
                let ts = format!("2024-01-01T00:00:0{sec}Z");
                let mut e = event(kind, user, &ts, role, &services);
                e["user"]["is_active"] = active.into();
                e["user"]["first_name"] = name.into();
                if let Some(email) = email {
                    e["user"]["email"] = email.into();
                }
                e
            },
        )
}

fn arb_poison() -> impl Strategy<Value = Message> {
    prop::sample::select(vec![
        Message::Poison("user.created", b"{not json".to_vec()),
        Message::Poison(
            "user.updated",
            br#"{"event_type":"user.updated","user_id":"not-a-uuid","timestamp":"2024-01-01T00:00:00Z"}"#.to_vec(),
        ),
        Message::Poison("user.deleted", out_of_range("9999-12-31T23:59:59-01:00")),
        Message::Poison("user.deleted", out_of_range("9998-01-01T00:00:00Z")),
    ])
}

/// A deletion of user 1 whose timestamp cannot be stored, or lies far in the future.
fn out_of_range(ts: &str) -> Vec<u8> {
    let mut e = event("user.deleted", 1, ts, "student", &[]);
    e.as_object_mut().unwrap().remove("event_id");
    e.to_string().into_bytes()
}

/// How one case runs: batch size, replicas, the brake's threshold (0: off), signing, and
/// batches in flight per worker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setup {
    pub batch: usize,
    pub replicas: usize,
    pub brake: u32,
    pub signed: bool,
    pub depth: usize,
}

fn arb_setup(depths: &'static [usize]) -> impl Strategy<Value = Setup> {
    (
        prop::sample::select(depths),
        1usize..12,
        1usize..=2,
        prop::sample::select(vec![0u32, 0, 1, 3]),
        any::<bool>(),
    )
        .prop_map(|(depth, batch, replicas, brake, signed)| Setup {
            batch,
            replicas,
            brake,
            signed,
            depth,
        })
}

/// A history and the order it is published in (indices, some twice).
pub(crate) fn arb_case(
    depths: &'static [usize],
) -> impl Strategy<Value = (Vec<Message>, Vec<usize>, Setup)> {
    let history = (
        prop::collection::vec(arb_event(), 4..28),
        prop::collection::vec(arb_poison(), 0..3),
    )
        .prop_map(|(events, poison)| {
            let events = events.into_iter().enumerate().map(|(i, mut e)| {
                let id = format!("event-{i}");
                e["event_id"] = id.clone().into();
                Message::Event(id, e)
            });
            events.chain(poison).collect::<Vec<_>>()
        });
    history.prop_flat_map(move |history| {
        let n = history.len();
        let order = prop::collection::vec(0..n, 0..n / 2).prop_flat_map(move |extra| {
            let all: Vec<usize> = (0..n).chain(extra).collect();
            Just(all).prop_shuffle()
        });
        (Just(history), order, arb_setup(depths))
    })
}

/// Deliveries whose fate is final (anything but a retry), summed over the workers.
pub(crate) async fn settled(workers: &[Worker]) -> f64 {
    outcomes(workers, |outcome| outcome != "retried").await
}

pub(crate) async fn final_count(workers: &[Worker], outcome: &str) -> f64 {
    outcomes(workers, |o| o == outcome).await
}

async fn outcomes(workers: &[Worker], counted: impl Fn(&str) -> bool) -> f64 {
    let mut total = 0.0;
    for w in workers {
        let (_, text) = http_get(w.http, "/metrics").await;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("user_sync_events_total{outcome=\"") else {
                continue;
            };
            let (outcome, value) = rest.split_once("\"} ").unwrap();
            if counted(outcome) {
                total += value.parse::<f64>().unwrap();
            }
        }
    }
    total
}

pub(crate) const KEY: &str = "model-test-signing-key";

async fn run_case(history: &[Message], order: &[usize], setup: Setup) {
    let mut env = Env::new()
        .await
        .set("batch_size", &setup.batch.to_string())
        .set("pipeline_depth", &setup.depth.to_string())
        .set("max_attempts", "4")
        .set("retry_delays_ms", "50,100")
        .set("deactivation_brake", &setup.brake.to_string());
    if setup.signed {
        env = env.set("event_signing_keys", KEY);
    }
    let store = env.store();
    store.migrate().await.unwrap();
    refusing_trigger(&store).await;
    let mut squatter = event("user.created", 9, "2024-01-01T00:00:00Z", "teacher", &[]);
    squatter["user"]["email"] = TAKEN.into();
    let squatter_plan = planned(&squatter);
    let (users, _) = decide::reduce(std::slice::from_ref(&squatter_plan));
    store
        .apply(std::slice::from_ref(&squatter_plan), &users)
        .await
        .unwrap();

    let mut workers = Vec::new();
    for _ in 0..setup.replicas {
        workers.push(env.start().await);
    }
    let p = env.publisher().await;
    for &i in order {
        let body = history[i].body();
        let props = if setup.signed {
            signed_by(KEY, &body)
        } else {
            lapin::BasicProperties::default()
        };
        p.publish_with(history[i].routing_key(), &body, props).await;
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

/// The table against the model, and every dead letter against its cause.
pub(crate) async fn check(env: &Env, history: &[Message], order: &[usize], squatter: Planned) {
    check_with(env, history, order, squatter, false).await
}

/// `check`; with `redelivered` (sessions lost mid-stream), a dead letter may have been
/// published twice: its delivery came back before its ack, as the contract allows.
pub(crate) async fn check_with(
    env: &Env,
    history: &[Message],
    order: &[usize],
    squatter: Planned,
    redelivered: bool,
) {
    let mut copies: HashMap<String, usize> = HashMap::new();
    for &i in order {
        if let Message::Event(id, _) = &history[i] {
            *copies.entry(id.clone()).or_default() += 1;
        }
    }
    let poison_sent = order
        .iter()
        .filter(|&&i| matches!(history[i], Message::Poison(..)))
        .count();
    let mut poison_dead = 0;
    let mut dead_copies: HashMap<String, usize> = HashMap::new();
    for d in env.dead_letters().await {
        let kind = header(&d, "x-error-kind").expect("x-error-kind");
        let error = header(&d, "x-error").expect("x-error");
        assert!(!error.contains("$2b$"), "a hash in x-error: {error}");
        let body: Option<serde_json::Value> = serde_json::from_slice(&d.data).ok();
        let Some(id) = body.as_ref().and_then(|b| b["event_id"].as_str()) else {
            assert_eq!(kind, "permanent", "{error}");
            poison_dead += 1;
            continue;
        };
        let user = &body.as_ref().unwrap()["user"];
        match kind.as_str() {
            "email_conflict" => assert!(
                [TAKEN, SHARED].contains(&user["email"].as_str().unwrap()),
                "{id}: {error}"
            ),
            "retries_exhausted" => {
                assert_eq!(user["first_name"], REFUSED, "{id}: {error}");
                assert!(error.contains("P0001"), "{error}");
            }
            other => panic!("{id} dead-lettered as {other}: {error}"),
        }
        *dead_copies.entry(id.to_string()).or_default() += 1;
    }
    assert!(
        poison_dead == poison_sent || redelivered && poison_dead > poison_sent,
        "every poison body is dead-lettered: {poison_dead} of {poison_sent}"
    );
    // An event is out of the model only when every copy of it was dead-lettered: a copy
    // acknowledged as stale changed nothing, one applied is in the table.
    let kept: Vec<Planned> = history
        .iter()
        .filter_map(|m| match m {
            // Fewer dead letters than copies: one copy was applied (or acknowledged stale).
            // More than copies: a copy dead-lettered, then redelivered with its session lost
            // before its ack, and dead-lettered again.
            Message::Event(id, e)
                if dead_copies.get(id).copied().unwrap_or(0)
                    < copies.get(id).copied().unwrap_or(0) =>
            {
                Some(planned(e))
            }
            _ => None,
        })
        .chain([squatter])
        .collect();
    let expected = decide::converge(&kept);
    let actual = env.store().states().await.unwrap();
    assert_eq!(
        actual, expected,
        "the table is not timestamp order over the applied events"
    );
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
