//! Random histories for the model tests: several users' events, some failing for good or
//! for a while (an email another user keeps or frees later, a row the backend's trigger
//! refuses), poison bodies, in any order with duplicates; and the check of a table and a
//! DLQ against the model.

use crate::support::*;
use proptest::prelude::*;
use std::collections::HashMap;
use user_sync::decide::{self, Planned};

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

/// Events of users 1 to 5 under names that may be refused, some taking `TAKEN` or
/// `SHARED`.
fn arb_model_event() -> impl Strategy<Value = serde_json::Value> {
    let shape = Shape {
        users: 5,
        seconds: 6,
        roles: &["student", "teacher"],
        names: &["A", "B", "A", "B", REFUSED],
    };
    let email = prop::sample::select(vec![None, None, None, None, Some(TAKEN), Some(SHARED)]);
    (arb_event(shape), email).prop_map(|(mut e, email)| {
        if let Some(email) = email {
            e["user"]["email"] = email.into();
        }
        e
    })
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
        prop::collection::vec(arb_model_event(), 4..28),
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

pub(crate) const KEY: &str = "model-test-signing-key";

/// A test's environment for one case of `setup`: the squatter holds `TAKEN` for good and
/// the backend's trigger refuses `REFUSED`. Returns it with the squatter's plan, which the
/// model counts in.
pub(crate) async fn case_env(setup: &Setup) -> (Env, Planned) {
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
    (env, squatter_plan)
}

/// Publishes `message`, signed with `KEY` when `signed`.
pub(crate) async fn publish(p: &Publisher, message: &Message, signed: bool) {
    let body = message.body();
    let props = if signed {
        signed_by(KEY, &body)
    } else {
        lapin::BasicProperties::default()
    };
    p.publish_with(message.routing_key(), &body, props).await;
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
