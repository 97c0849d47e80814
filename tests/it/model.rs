//! Model-based test with failure injection: random histories of several users published
//! in any order with duplicates, through one or two real workers at any batch size, with
//! events that fail (an email another user keeps for good or frees later, a row the
//! backend's trigger refuses, poison bodies). Whatever happens, the table must equal the
//! model (timestamp order over the events that were not dead-lettered), nothing may be
//! acknowledged unapplied, and every failure must end in the DLQ with its reason.

use crate::helpers::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::HashMap;
use std::time::Duration;
use user_sync::decide::{self, Planned};
use user_sync::event::{DEFAULT_MAX_BODY_BYTES, Decoded, decode};
use user_sync::membership::Membership;

const WAIT: Duration = Duration::from_secs(60);
/// Held by user 9 from the start, for good: an event taking it never succeeds.
const TAKEN: &str = "taken@example.com";
/// Wanted by several users of the history: a conflict that may resolve or not.
const SHARED: &str = "shared@example.com";
/// What the backend's trigger refuses (SQLSTATE P0001).
const REFUSED: &str = "Refused";

#[derive(Debug, Clone)]
enum Message {
    /// A well-formed event: its id (unique in the history) and body.
    Event(String, serde_json::Value),
    /// A body that can never be applied.
    Poison(&'static str, Vec<u8>),
}

impl Message {
    fn routing_key(&self) -> &str {
        match self {
            Message::Event(_, e) => e["event_type"].as_str().unwrap(),
            Message::Poison(key, _) => key,
        }
    }

    fn body(&self) -> Vec<u8> {
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
            br#"{"user_id":"not-a-uuid","timestamp":"2024-01-01T00:00:00Z"}"#.to_vec(),
        ),
    ])
}

/// A history, the order it is published in (indices, some twice), batch size, replicas.
fn arb_case() -> impl Strategy<Value = (Vec<Message>, Vec<usize>, usize, usize)> {
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
    history.prop_flat_map(|history| {
        let n = history.len();
        let order = prop::collection::vec(0..n, 0..n / 2).prop_flat_map(move |extra| {
            let all: Vec<usize> = (0..n).chain(extra).collect();
            Just(all).prop_shuffle()
        });
        (Just(history), order, 1usize..12, 1usize..=2)
    })
}

fn planned(e: &serde_json::Value) -> Planned {
    let membership = Membership::new("lms", &["teacher".into()]);
    let body = e.to_string();
    match decode(body.as_bytes(), "user.updated", DEFAULT_MAX_BODY_BYTES).unwrap() {
        Decoded::Event(e) => decide::plan(&e, &membership),
        Decoded::Unknown { .. } => unreachable!(),
    }
}

/// Deliveries whose fate is final (anything but a retry), summed over the workers.
async fn settled(workers: &[Worker]) -> f64 {
    let mut total = 0.0;
    for w in workers {
        let (_, text) = http_get(w.http, "/metrics").await;
        total += text
            .lines()
            .filter(|l| l.starts_with("user_sync_events_total{") && !l.contains("\"retried\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

async fn run_case(history: &[Message], order: &[usize], batch: usize, replicas: usize) {
    let env = Env::new()
        .await
        .set("batch_size", &batch.to_string())
        .set("max_attempts", "4")
        .set("retry_delays_ms", "50,100");
    let store = env.store();
    store.migrate().await.unwrap();
    for sql in [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.first_name = 'Refused' THEN RAISE EXCEPTION 'refused by the backend'; END IF; \
           RETURN NEW; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION refuse()",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    let mut squatter = event("user.created", 9, "2024-01-01T00:00:00Z", "teacher", &[]);
    squatter["user"]["email"] = TAKEN.into();
    let squatter_plan = planned(&squatter);
    let (users, _) = decide::reduce(std::slice::from_ref(&squatter_plan));
    store
        .apply(std::slice::from_ref(&squatter_plan), &users)
        .await
        .unwrap();

    let mut workers = Vec::new();
    for _ in 0..replicas {
        workers.push(env.start().await);
    }
    let p = env.publisher().await;
    for &i in order {
        p.publish(history[i].routing_key(), &history[i].body())
            .await;
    }
    let published = order.len() as f64;
    let mut last = 0.0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while last != published {
        assert!(
            tokio::time::Instant::now() < deadline,
            "settled {last} of {published} deliveries"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = settled(&workers).await;
    }
    for w in workers {
        w.stop().await;
    }
    check(&env, history, order, squatter_plan).await;
}

/// The table against the model, and every dead letter against its cause.
async fn check(env: &Env, history: &[Message], order: &[usize], squatter: Planned) {
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
    assert_eq!(
        poison_dead, poison_sent,
        "every poison body is dead-lettered"
    );
    // An event is out of the model only when every copy of it was dead-lettered: a copy
    // acknowledged as stale changed nothing, one applied is in the table.
    let kept: Vec<Planned> = history
        .iter()
        .filter_map(|m| match m {
            Message::Event(id, e) if dead_copies.get(id) != copies.get(id) => Some(planned(e)),
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

#[test]
fn random_histories_with_failures_end_in_the_model_and_the_dlq() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 12,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&arb_case(), |(history, order, batch, replicas)| {
            rt.block_on(run_case(&history, &order, batch, replicas));
            Ok(())
        })
        .unwrap();
}
