//! One record of an export as the change it stands for: a `user.created` event at the
//! record's own `timestamp` (or `--as-of`), through the worker's decoder and decision.

use crate::decide::{self, Planned};
use crate::event::{self, Decoded, Rules};
use crate::membership::Membership;
use crate::target_table::TargetTable;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

/// Everything a record's decoding needs; moved to the reading thread.
pub struct Decoder {
    pub as_of: Option<String>,
    /// A full export is the state at `--as-of`: a record dated earlier (its own last
    /// change) stands at that time, so it outranks what happened before the export.
    pub at_least: Option<OffsetDateTime>,
    pub rules: Rules,
    pub membership: Membership,
    /// Refuses a record whose row it cannot take (a computed column too long).
    pub target: Option<TargetTable>,
}

/// A record that cannot be applied: why, and its user when its `id` could be read (a
/// reconcile must not take that user for one the export leaves out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub why: String,
    pub user_id: Option<Uuid>,
}

impl Decoder {
    pub fn decode(&self, record: Result<Value, String>) -> Result<Planned, Invalid> {
        let user_id = record.as_ref().ok().and_then(|r| {
            let id = r.get("id")?.as_str()?;
            Uuid::parse_str(id).ok()
        });
        self.planned(record).map_err(|why| Invalid { why, user_id })
    }

    fn planned(&self, record: Result<Value, String>) -> Result<Planned, String> {
        let body = as_event(&record?, self.as_of.as_deref())?;
        let mut event = match event::decode_with(&body, "user.created", &self.rules) {
            Ok(Decoded::Event(e)) => e,
            Ok(Decoded::Unknown { .. }) => unreachable!("imports are user.created"),
            Err(rejection) => return Err(rejection.0),
        };
        if let Some(t) = self.at_least {
            event.timestamp = event.timestamp.max(t);
        }
        let mut planned = decide::plan(&event, &self.membership);
        match self.target.as_ref().and_then(|m| m.refuses(&mut planned)) {
            Some(why) => Err(why),
            None => Ok(planned),
        }
    }
}

/// The event a record stands for, as the auth system would have published it.
fn as_event(record: &Value, as_of: Option<&str>) -> Result<Vec<u8>, String> {
    let user = record.as_object().ok_or("not a JSON object")?;
    let timestamp = match (user.get("timestamp"), as_of) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => Value::String(t.to_string()),
        (None, None) => return Err("no timestamp, and no --as-of given".into()),
    };
    let mut user = user.clone();
    user.remove("timestamp");
    let id = user.get("id").cloned().unwrap_or(Value::Null);
    let body =
        json!({"event_type": "user.created", "user_id": id, "user": user, "timestamp": timestamp});
    Ok(body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_needs_a_timestamp_or_as_of() {
        let r = json!({"id": "x", "email": "a@example.com"});
        assert!(as_event(&r, None).is_err());
        let body: Value =
            serde_json::from_slice(&as_event(&r, Some("2024-01-01T00:00:00Z")).unwrap()).unwrap();
        assert_eq!(body["timestamp"], "2024-01-01T00:00:00Z");
        assert_eq!(body["user_id"], "x");
        let own = json!({"id": "x", "timestamp": "2023-05-05T00:00:00Z"});
        let body: Value =
            serde_json::from_slice(&as_event(&own, Some("2024-01-01T00:00:00Z")).unwrap()).unwrap();
        assert_eq!(
            body["timestamp"], "2023-05-05T00:00:00Z",
            "a record's own time wins"
        );
        assert!(body["user"].get("timestamp").is_none());
    }
}
