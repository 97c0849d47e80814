use super::*;
use crate::event::UserData;
use proptest::prelude::*;

const HASH: &str = "$2b$12$zF7vDVD5e.4xzmEI05ezE.ruqh5Vux7K3MLMbdsBDCmcd.PIs8L/O";

fn membership() -> Membership {
    Membership::new("lms", &["teacher".into(), "curator".into(), "admin".into()])
}

fn uid(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
}

fn event(kind: EventKind, secs: i64, role: &str, services: &[&str], active: bool) -> Event {
    Event {
        event_id: None,
        kind,
        user_id: uid(1),
        timestamp: at(secs),
        user: UserData {
            email: Some("student@example.com".into()),
            first_name: Some("Иван".into()),
            last_name: None,
            password_hash: Some(HASH.into()),
            role: Some(role.into()),
            is_active: active,
            allowed_services: services.iter().map(|s| s.to_string()).collect(),
        },
    }
}

fn student(kind: EventKind, secs: i64, services: &[&str]) -> Planned {
    plan(&event(kind, secs, "student", services, true), &membership())
}

/// Applies events in the given (arrival) order, returning each outcome and the end state.
fn run(events: &[Planned]) -> (Vec<Outcome>, State) {
    let mut state = State::default();
    let mut outcomes = Vec::new();
    for p in events {
        let (o, next) = model::step(p, &state);
        outcomes.push(o);
        state = next;
    }
    (outcomes, state)
}

use EventKind::{Created, Deleted, Updated};

#[test]
fn created_for_this_service_inserts_an_active_row() {
    let (o, s) = run(&[student(Created, 0, &["lms"])]);
    assert_eq!(o, [Outcome::Applied]);
    let row = s.row.unwrap();
    assert!(row.is_active);
    assert_eq!(row.deactivation_reason, None);
    assert_eq!(
        row.password_hash.as_ref().map(PasswordHash::as_str),
        Some(HASH),
        "stored byte-for-byte"
    );
}

#[test]
fn created_for_another_service_creates_nothing_but_records_the_watermark() {
    let (o, s) = run(&[student(Created, 0, &["sat"])]);
    assert_eq!(o, [Outcome::NotForService]);
    assert!(s.row.is_none());
    assert!(s.status.is_some());
}

#[test]
fn revoked_access_deactivates_and_regrant_reactivates() {
    let (o, s) = run(&[
        student(Created, 0, &["lms"]),
        student(Updated, 1, &["sat"]),
        student(Updated, 2, &["sat", "lms"]),
    ]);
    assert_eq!(
        o,
        [Outcome::Applied, Outcome::Deactivated, Outcome::Reactivated]
    );
    assert!(s.row.unwrap().is_active);
    let (_, s) = run(&[student(Created, 0, &["lms"]), student(Updated, 1, &[])]);
    let row = s.row.unwrap();
    assert!(!row.is_active);
    assert_eq!(row.deactivation_reason, Some(Reason::AccessRevoked));
}

#[test]
fn staff_roles_belong_without_services() {
    let teacher = plan(&event(Created, 0, "Teacher", &[], true), &membership());
    assert!(matches!(teacher.intent, Intent::Upsert(_)));
}

#[test]
fn deleted_deactivates_and_never_removes() {
    let (o, s) = run(&[student(Created, 0, &["lms"]), student(Deleted, 1, &[])]);
    assert_eq!(o, [Outcome::Applied, Outcome::Deactivated]);
    let row = s.row.unwrap();
    assert!(!row.is_active);
    assert_eq!(row.deactivation_reason, Some(Reason::Deleted));
    assert_eq!(row.email, "student@example.com", "fields are kept");
    assert_eq!(row.source_updated_at, at(1));
}

#[test]
fn inactive_upstream_is_stored_inactive_with_its_reason() {
    let p = plan(
        &event(Updated, 0, "student", &["lms"], false),
        &membership(),
    );
    let (_, s) = run(&[p]);
    let row = s.row.unwrap();
    assert!(!row.is_active);
    assert_eq!(row.deactivation_reason, Some(Reason::InactiveUpstream));
}

#[test]
fn stale_events_change_nothing() {
    let (o, s) = run(&[student(Updated, 5, &["lms"]), student(Updated, 1, &[])]);
    assert_eq!(o, [Outcome::Applied, Outcome::Stale]);
    assert!(s.row.unwrap().is_active);
}

#[test]
fn a_late_create_cannot_resurrect_a_deleted_user() {
    // Timestamp order would have created the row and then deactivated it: the late create
    // fills in the fields, the newer deletion keeps the row inactive.
    let (o, s) = run(&[student(Deleted, 5, &[]), student(Created, 1, &["lms"])]);
    assert_eq!(o, [Outcome::Absent, Outcome::Backfilled]);
    let row = s.row.unwrap();
    assert!(!row.is_active);
    assert_eq!(row.deactivation_reason, Some(Reason::Deleted));
    assert_eq!(row.source_updated_at, at(5));
    let (o, s) = run(&[student(Updated, 5, &["sat"]), student(Created, 1, &["lms"])]);
    assert_eq!(o, [Outcome::NotForService, Outcome::Backfilled]);
    assert_eq!(
        s.row.unwrap().deactivation_reason,
        Some(Reason::AccessRevoked)
    );
}

#[test]
fn a_late_event_for_another_service_creates_nothing() {
    let (o, s) = run(&[student(Deleted, 5, &[]), student(Created, 1, &["sat"])]);
    assert_eq!(o, [Outcome::Absent, Outcome::Stale]);
    assert!(s.row.is_none());
}

#[test]
fn an_older_grant_cannot_reactivate_a_deleted_row() {
    let (o, s) = run(&[
        student(Created, 0, &["lms"]),
        student(Deleted, 5, &[]),
        student(Updated, 3, &["lms"]),
    ]);
    assert_eq!(
        o[2],
        Outcome::Backfilled,
        "its fields are newer than the create's"
    );
    let row = s.row.unwrap();
    assert!(!row.is_active);
    assert_eq!(row.deactivation_reason, Some(Reason::Deleted));
    let (o, _) = run(&[
        student(Created, 0, &["lms"]),
        student(Updated, 4, &["lms"]),
        student(Deleted, 5, &[]),
        student(Updated, 3, &["lms"]),
    ]);
    assert_eq!(o[3], Outcome::Stale, "older than both watermarks");
}

#[test]
fn equal_timestamps_deleted_beats_updated_beats_created() {
    let c = student(Created, 1, &["lms"]);
    let u = student(Updated, 1, &["sat"]);
    let d = student(Deleted, 1, &[]);
    for order in [
        vec![c.clone(), u.clone(), d.clone()],
        vec![d.clone(), u.clone(), c.clone()],
        vec![u.clone(), d.clone(), c.clone()],
    ] {
        let (_, s) = run(&order);
        assert_eq!(s.status.map(|s| s.key), Some(d.key));
    }
    let (o, s) = run(&[u.clone(), c.clone()]);
    assert_eq!(
        o[1],
        Outcome::Backfilled,
        "created sorts before updated at the same instant"
    );
    assert!(
        !s.row.unwrap().is_active,
        "so the revoking update keeps the row inactive"
    );
}

#[test]
fn identical_events_are_no_ops() {
    let c = student(Created, 1, &["lms"]);
    let (o, s1) = run(&[c.clone(), c.clone()]);
    assert_eq!(o, [Outcome::Applied, Outcome::Stale]);
    let (_, s2) = run(&[c]);
    assert_eq!(s1, s2);
}

#[test]
fn same_instant_same_kind_different_content_has_one_winner() {
    let a = student(Updated, 1, &["lms"]);
    let b = student(Updated, 1, &["sat"]);
    assert_ne!(a.key, b.key);
    assert_eq!(run(&[a.clone(), b.clone()]).1, run(&[b, a]).1);
}

#[test]
fn reduce_keeps_the_newest_per_user_sorted_by_user() {
    let mut later = student(Updated, 9, &["lms"]);
    later.user_id = uid(0);
    let batch = vec![
        student(Created, 1, &["lms"]),
        student(Updated, 3, &["lms"]),
        later,
        student(Updated, 2, &["lms"]),
    ];
    let (users, mut losers) = reduce(&batch);
    let one = |newest, upsert| UserBatch { newest, upsert };
    assert_eq!(users, [one(2, Some(2)), one(1, Some(1))]);
    losers.sort();
    assert_eq!(losers, [0, 3]);
    let batch = vec![
        student(Created, 1, &["lms"]),
        student(Deleted, 3, &[]),
        student(Updated, 2, &["lms"]),
    ];
    let (users, losers) = reduce(&batch);
    assert_eq!(
        users,
        [one(1, Some(2))],
        "the newest upsert travels with the deletion"
    );
    assert_eq!(losers, [0]);
}

fn arb_event() -> impl Strategy<Value = Planned> {
    (
        0u8..3,
        0usize..3,
        0i64..4,
        prop::sample::select(vec!["student", "teacher"]),
        prop::sample::subsequence(vec!["lms", "sat"], 0..=2),
        any::<bool>(),
        0u8..2,
    )
        .prop_map(|(user, kind, secs, role, services, active, email)| {
            let kind = [Created, Updated, Deleted][kind];
            let mut e = event(kind, secs, role, &services, active);
            e.user_id = uid(user);
            e.user.email = Some(format!("u{user}-{email}@example.com"));
            plan(&e, &membership())
        })
}

proptest! {
    #[test]
    fn any_order_with_duplicates_converges_to_the_timestamp_order(
        (history, order) in prop::collection::vec(arb_event(), 1..12).prop_flat_map(|h| {
            let n = h.len();
            // Every event at least once, some several times, in a shuffled order.
            let order = prop::collection::vec(0..n, 0..n * 2).prop_flat_map(move |extra| {
                let all: Vec<usize> = (0..n).chain(extra).collect();
                Just(all).prop_shuffle()
            });
            (Just(h), order)
        })
    ) {
        let expected = converge(&history);
        let mut states: std::collections::BTreeMap<Uuid, State> = Default::default();
        for p in order.iter().map(|&i| &history[i]) {
            let s = states.entry(p.user_id).or_default();
            *s = model::step(p, s).1;
        }
        prop_assert_eq!(states, expected);
    }
}
