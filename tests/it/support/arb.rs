//! Random events for the property tests.

use super::event;
use proptest::prelude::*;

/// What random events range over; every other field is the fixed one of `event`.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    /// Users 1 to `users`.
    pub(crate) users: u8,
    /// Timestamps at seconds 0 to `seconds - 1` of 2024 (at most 10).
    pub(crate) seconds: u32,
    pub(crate) roles: &'static [&'static str],
    /// First names, picked uniformly: list one twice to weigh it.
    pub(crate) names: &'static [&'static str],
}

/// Events of any type for `shape`'s users, roles and names, with any services of `lms`
/// and `sat`, active or not upstream.
pub(crate) fn arb_event(shape: Shape) -> impl Strategy<Value = serde_json::Value> {
    (
        1..=shape.users,
        prop::sample::select(vec!["user.created", "user.updated", "user.deleted"]),
        0..shape.seconds,
        prop::sample::select(shape.roles),
        prop::sample::subsequence(vec!["lms", "sat"], 0..=2),
        any::<bool>(),
        prop::sample::select(shape.names),
    )
        .prop_map(|(user, kind, sec, role, services, active, name)| {
            let ts = format!("2024-01-01T00:00:0{sec}Z");
            let mut e = event(kind, user, &ts, role, &services);
            e["user"]["is_active"] = active.into();
            e["user"]["first_name"] = name.into();
            e
        })
}
