//! Events and export records as the auth system writes them, small numbers naming fixed
//! users, and what the service plans for them.

use std::collections::BTreeMap;
use user_sync::decide::{self, Planned};
use user_sync::event::{DEFAULT_MAX_BODY_BYTES, Decoded, decode};
use user_sync::membership::Membership;

pub(crate) const HASH: &str = "$2b$12$zF7vDVD5e.4xzmEI05ezE.ruqh5Vux7K3MLMbdsBDCmcd.PIs8L/O";

/// A well-formed event for `user` (a small number names a fixed UUID).
pub(crate) fn event(
    kind: &str,
    user: u8,
    ts: &str,
    role: &str,
    services: &[&str],
) -> serde_json::Value {
    let id = uuid::Uuid::from_bytes([user; 16]).to_string();
    serde_json::json!({
        "event_type": kind,
        "user_id": id,
        "user": {
            "id": id,
            "email": format!("user{user}@example.com"),
            "first_name": "Test",
            "last_name": format!("User {user}"),
            "password_hash": HASH,
            "role": role,
            "is_active": true,
            "allowed_services_json": serde_json::to_string(services).unwrap(),
        },
        "timestamp": ts,
    })
}

pub(crate) fn uid(user: u8) -> uuid::Uuid {
    uuid::Uuid::from_bytes([user; 16])
}

/// A `kind` event of student `user` (of `lms`) at `ts` carrying the email of `owner`: an
/// email conflict while `owner` holds it.
pub(crate) fn with_email_of(kind: &str, user: u8, owner: u8, ts: &str) -> serde_json::Value {
    let mut e = event(kind, user, ts, "student", &["lms"]);
    e["user"]["email"] = format!("user{owner}@example.com").into();
    e
}

/// An update of `user` taking the email of `owner`: an email conflict while `owner` has it.
pub(crate) fn taking_email_of(user: u8, owner: u8, ts: &str) -> serde_json::Value {
    with_email_of("user.updated", user, owner, ts)
}

/// User `n`'s record in an export: the user object of an event, with no timestamp of its
/// own (`--as-of` dates it).
pub(crate) fn record(n: u8, role: &str, services: &[&str]) -> serde_json::Value {
    let mut user = event("user.created", n, "2024-01-01T00:00:00Z", role, services)["user"].clone();
    user.as_object_mut().unwrap().remove("timestamp");
    user
}

/// Event `i` of a stream over 40 users: creates, revocations, re-grants and deletions in
/// turn, dated `i` seconds into 2024, so the newest timestamp applied says how far a
/// worker got.
pub(crate) fn churn(i: usize) -> serde_json::Value {
    let user = (i % 40) as u8 + 1;
    let kinds = [
        "user.created",
        "user.updated",
        "user.updated",
        "user.deleted",
    ];
    let services: &[&str] = if (i / 40) % 3 == 1 {
        &["sat"]
    } else {
        &["lms"]
    };
    let ts = format!(
        "2024-01-01T{:02}:{:02}:{:02}Z",
        i / 3600,
        i / 60 % 60,
        i % 60
    );
    event(kinds[(i / 40) % 4], user, &ts, "student", services)
}

/// The first `n` events of `churn`, every fifth sent twice, each with its index.
pub(crate) fn churn_stream(n: usize) -> Vec<(i64, serde_json::Value)> {
    let mut out = Vec::with_capacity(n + n / 5);
    for i in 0..n {
        let e = churn(i);
        if i % 5 == 0 {
            out.push((i as i64, e.clone()));
        }
        out.push((i as i64, e));
    }
    out
}

/// The table that `events` must leave, by the reference model (timestamp order).
pub(crate) fn model_states<'a>(
    events: impl IntoIterator<Item = &'a serde_json::Value>,
) -> BTreeMap<uuid::Uuid, decide::State> {
    let planned: Vec<Planned> = events.into_iter().map(planned).collect();
    decide::converge(&planned)
}

/// `lms` with the default staff roles (teacher, curator, admin), as the settings give it.
pub(crate) fn default_membership() -> Membership {
    Membership::new("lms", &["teacher".into(), "curator".into(), "admin".into()])
}

/// What the service plans for the well-formed `e`, as `lms` with the teachers as staff.
pub(crate) fn planned(e: &serde_json::Value) -> Planned {
    plan_as(e, &Membership::new("lms", &["teacher".into()]))
}

/// What the service plans for the well-formed `e` under `membership`.
pub(crate) fn plan_as(e: &serde_json::Value, membership: &Membership) -> Planned {
    match decode(
        e.to_string().as_bytes(),
        "user.updated",
        DEFAULT_MAX_BODY_BYTES,
    )
    .unwrap()
    {
        Decoded::Event(e) => decide::plan(&e, membership),
        Decoded::Unknown { .. } => unreachable!(),
    }
}

/// A history as a broker might deliver it: every third event twice, in a fixed shuffle
/// (reversed, then its halves interleaved).
pub(crate) fn replayed_out_of_order(history: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    let mut stream: Vec<&serde_json::Value> =
        history.iter().chain(history.iter().step_by(3)).collect();
    stream.reverse();
    let (left, right) = stream.split_at(stream.len() / 2);
    left.iter()
        .zip(right.iter())
        .flat_map(|(x, y)| [*x, *y])
        .chain(right.iter().skip(left.len()).copied())
        .collect()
}

/// The fixture events of `tests/fixtures/events/{kind}` (`valid` or `invalid`), as
/// (file name, body), sorted by name.
pub(crate) fn fixtures(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/events")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// The routing key the fixtures README gives: `event_type`, or `user.updated`.
pub(crate) fn routing_key(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["event_type"].as_str().map(String::from))
        .unwrap_or_else(|| "user.updated".into())
}

/// The most common event of these tests: `user` created at the start of 2024 as a student
/// of this service.
pub(crate) fn created(user: u8) -> serde_json::Value {
    event(
        "user.created",
        user,
        "2024-01-01T00:00:00Z",
        "student",
        &["lms"],
    )
}
