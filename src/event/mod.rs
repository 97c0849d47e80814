//! The wire format (docs/contract.md#wire-format): `decode(bytes, routing_key) -> Event`
//! with no I/O.
//!
//! Every producer quirk is absorbed here so that the rest of the service sees one clean shape.

use crate::redact::PasswordHash;
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

/// Default cap on a message body; anything larger is rejected before it is parsed.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

/// On the command line (`send --type`) a kind is named without its `user.` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum EventKind {
    // The declaration order is the tie-break on equal timestamps: deleted beats updated
    // beats created (docs/contract.md#ordering-events).
    #[value(alias = "user.created")]
    Created,
    #[value(alias = "user.updated")]
    Updated,
    #[value(alias = "user.deleted")]
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "user.created",
            EventKind::Updated => "user.updated",
            EventKind::Deleted => "user.deleted",
        }
    }
}

/// The user's fields as the auth system sent them. Only `email` is guaranteed on
/// created/updated; a `deleted` event may carry none of them. `Debug` masks the hash (a
/// `PasswordHash`), so no panic message or debug log can carry it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserData {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub password_hash: Option<PasswordHash>,
    pub role: Option<String>,
    pub is_active: bool,
    pub allowed_services: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event_id: Option<String>,
    pub kind: EventKind,
    pub user_id: Uuid,
    /// Truncated to microseconds: that is what Postgres stores, and the ordering rule must
    /// compare the same values in Rust and in SQL.
    pub timestamp: OffsetDateTime,
    pub user: UserData,
}

/// What decoding can yield besides an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Event(Event),
    /// An event type this service does not handle: acknowledged, logged and counted.
    Unknown {
        event_type: String,
    },
}

/// A body that can never become valid: it goes to the dead-letter queue, never retried.
/// The message never quotes field values, so no password hash can leak through it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

fn reject(msg: impl Into<String>) -> Rejection {
    Rejection(msg.into())
}

#[derive(Deserialize)]
struct WireEvent {
    event_id: Option<Value>,
    event_type: Option<String>,
    user_id: Option<Value>,
    user: Option<WireUser>,
    timestamp: Option<Value>,
}

#[derive(Deserialize)]
struct WireUser {
    id: Option<Value>,
    email: Option<Value>,
    first_name: Option<Value>,
    last_name: Option<Value>,
    password_hash: Option<Value>,
    role: Option<Value>,
    is_active: Option<Value>,
    allowed_services_json: Option<Value>,
}

/// What the worker asks of a body beyond the wire format.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub max_body: usize,
    /// Latest timestamp accepted (now plus `MAX_FUTURE_SKEW_SECS`): an event dated far ahead
    /// would win every comparison and freeze its user until that date.
    pub latest: Option<OffsetDateTime>,
    /// With `EVENT_SIGNING_KEYS` set, the event type must come from the signed body and
    /// agree with the unsigned routing key, so a captured body cannot be replayed as another
    /// kind of event.
    pub signed: bool,
}

impl Rules {
    /// The wire format alone: no clock, no signature.
    pub fn lenient(max_body: usize) -> Self {
        Rules {
            max_body,
            latest: None,
            signed: false,
        }
    }
}

pub fn decode(body: &[u8], routing_key: &str, max_body: usize) -> Result<Decoded, Rejection> {
    decode_with(body, routing_key, &Rules::lenient(max_body))
}

pub fn decode_with(body: &[u8], routing_key: &str, rules: &Rules) -> Result<Decoded, Rejection> {
    let max_body = rules.max_body;
    if body.len() > max_body {
        return Err(reject(format!(
            "body of {} bytes is over the {max_body}-byte limit",
            body.len()
        )));
    }
    let text = std::str::from_utf8(body).map_err(|_| reject("body is not valid UTF-8"))?;
    let wire: WireEvent = serde_json::from_str(text).map_err(|e| {
        reject(format!(
            "body is not a valid event object: {}",
            e.classify_msg()
        ))
    })?;

    if rules.signed {
        signed_type_agrees(wire.event_type.as_deref(), routing_key)?;
    }
    let event_type = wire.event_type.as_deref().unwrap_or(routing_key);
    let kind = match event_type {
        "user.created" => EventKind::Created,
        "user.updated" => EventKind::Updated,
        "user.deleted" => EventKind::Deleted,
        other => {
            return Ok(Decoded::Unknown {
                event_type: other.chars().take(100).collect(),
            });
        }
    };

    let user_id = user_id(&wire)?;
    let timestamp = timestamp(&wire, rules)?;
    let event_id = event_id(wire.event_id)?;
    let user = match wire.user {
        Some(u) => user_data(u)?,
        None => UserData {
            is_active: true,
            ..UserData::default()
        },
    };
    if kind != EventKind::Deleted && user.email.as_deref().is_none_or(str::is_empty) {
        return Err(reject(format!("missing email on {}", kind.as_str())));
    }
    Ok(Decoded::Event(Event {
        event_id,
        kind,
        user_id,
        timestamp,
        user,
    }))
}

/// `user_id`, or `user.id` when it is alone; the two must agree when both are given.
fn user_id(wire: &WireEvent) -> Result<Uuid, Rejection> {
    match (
        &wire.user_id,
        wire.user.as_ref().and_then(|u| u.id.as_ref()),
    ) {
        (Some(top), inner) => {
            let id = parse_uuid(top, "user_id")?;
            if let Some(inner) = inner
                && parse_uuid(inner, "user.id")? != id
            {
                return Err(reject("user.id differs from user_id"));
            }
            Ok(id)
        }
        (None, Some(inner)) => parse_uuid(inner, "user.id"),
        (None, None) => Err(reject("missing user_id")),
    }
}

/// The event's time, within what Postgres can store and no further ahead than the rules
/// allow.
fn timestamp(wire: &WireEvent, rules: &Rules) -> Result<OffsetDateTime, Rejection> {
    let timestamp = match &wire.timestamp {
        Some(Value::String(s)) => parse_timestamp(s)?,
        Some(Value::Null) | None => return Err(reject("missing timestamp")),
        Some(_) => return Err(reject("timestamp is not a string")),
    };
    if rules.latest.is_some_and(|latest| timestamp > latest) {
        return Err(reject(
            "timestamp is further in the future than MAX_FUTURE_SKEW_SECS",
        ));
    }
    Ok(timestamp)
}

fn event_id(v: Option<Value>) -> Result<Option<String>, Rejection> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 200 && !s.contains('\0') => Ok(Some(s)),
        Some(_) => Err(reject("event_id is not a short string")),
    }
}

fn signed_type_agrees(body_type: Option<&str>, routing_key: &str) -> Result<(), Rejection> {
    match body_type {
        None => Err(reject("signed body has no event_type")),
        Some(t) if t != routing_key => {
            Err(reject("routing key differs from the signed event_type"))
        }
        Some(_) => Ok(()),
    }
}

trait ClassifyMsg {
    fn classify_msg(&self) -> String;
}

impl ClassifyMsg for serde_json::Error {
    // serde_json's messages can quote the offending value (e.g. "invalid type: string
    // \"$2b$...\""); keep only the category and position so no field value leaks.
    fn classify_msg(&self) -> String {
        format!(
            "{:?} error at line {} column {}",
            self.classify(),
            self.line(),
            self.column()
        )
    }
}

fn parse_uuid(v: &Value, field: &str) -> Result<Uuid, Rejection> {
    match v {
        Value::String(s) => {
            Uuid::parse_str(s).map_err(|_| reject(format!("{field} is not a UUID")))
        }
        Value::Null => Err(reject(format!("missing {field}"))),
        _ => Err(reject(format!("{field} is not a UUID string"))),
    }
}

mod fields;

pub use fields::parse_timestamp;
use fields::user_data;
#[cfg(test)]
use fields::{allowed_services, check_bcrypt};

#[cfg(test)]
mod hostile_tests;

#[cfg(test)]
mod tests;
