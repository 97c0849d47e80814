//! One record of an export as the change it stands for: a `user.created` event at the
//! record's own `timestamp` (or `--as-of`), through the worker's decoder and decision.

use crate::decide::{self, Planned};
use crate::event::{self, Decoded, Rules};
use crate::membership::Membership;
use serde_json::{Value, json};

/// Everything a record's decoding needs; moved to the reading thread.
pub struct Decoder {
    pub as_of: Option<String>,
    pub rules: Rules,
    pub membership: Membership,
}

impl Decoder {
    pub fn decode(&self, record: Result<Value, String>) -> Result<Planned, String> {
        let body = as_event(&record?, self.as_of.as_deref())?;
        match event::decode_with(&body, "user.created", &self.rules).map_err(|r| r.0)? {
            Decoded::Event(e) => Ok(decide::plan(&e, &self.membership)),
            Decoded::Unknown { .. } => unreachable!("imports are user.created"),
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
