//! `user-sync send`: publish one well-formed event for a smoke test after a deployment. By
//! default it goes to this service's own queue only, the way our retry copies return
//! (through the default exchange, the routing key in `x-routing-key`): a smoke test must
//! not create a teacher in every backend of the company. `--to-exchange` publishes on the
//! shared auth exchange instead, as the auth system would.

use crate::broker::{BrokerError, Session, Topology};
use crate::event::{self, Decoded, EventKind};
use crate::settings::Settings;
use lapin::BasicProperties;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// What to send when no file is given.
#[derive(Debug, Clone)]
pub struct Draft {
    pub kind: EventKind,
    pub email: String,
    pub role: String,
    pub services: Vec<String>,
    pub user_id: Option<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// A smoke-test password hash: bcrypt-shaped so the event is valid, of a random password
/// nobody knows, at the lowest cost so it is quick to make.
fn throwaway_hash() -> String {
    bcrypt::hash(Uuid::new_v4().to_string(), 4).expect("bcrypt at cost 4")
}

impl Draft {
    pub fn body(&self) -> Vec<u8> {
        let id = self.user_id.unwrap_or_else(Uuid::new_v4).to_string();
        let now = OffsetDateTime::now_utc().format(&Rfc3339).expect("formats");
        let services = serde_json::to_string(&self.services).expect("strings serialise");
        let body = json!({
            "event_type": self.kind.as_str(),
            "user_id": id,
            "user": {
                "id": id,
                "email": self.email,
                "first_name": "Smoke",
                "last_name": "Test",
                "password_hash": throwaway_hash(),
                "role": self.role,
                "is_active": self.kind != EventKind::Deleted,
                "allowed_services_json": services,
            },
            "timestamp": now,
        });
        body.to_string().into_bytes()
    }
}

/// Where `send` publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// This service's queue only.
    OwnQueue,
    /// The shared auth exchange: every service bound to it receives the event.
    SharedExchange,
}

/// Checks the body with the worker's own decoder, then publishes it and waits for the
/// broker's confirm. Returns the routing key.
pub async fn send(settings: &Settings, body: &[u8], to: Destination) -> Result<String, SendError> {
    let routing_key = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("event_type")?.as_str().map(str::to_string))
        .ok_or_else(|| SendError::Invalid("the body has no event_type".into()))?;
    match event::decode(body, &routing_key, settings.max_body_bytes) {
        Ok(Decoded::Event(_)) => {}
        Ok(Decoded::Unknown { event_type }) => {
            return Err(SendError::Invalid(format!(
                "unknown event type {event_type:?}"
            )));
        }
        Err(rejection) => return Err(SendError::Invalid(rejection.0)),
    }
    let topo = Topology::new(settings);
    let session = Session::open(settings, &topo).await?;
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    // Signed with the first key when the consumers require signatures.
    if let Some(key) = settings.event_signing_keys.first() {
        let mut headers = lapin::types::FieldTable::default();
        let signed = crate::signature::sign(key, body);
        headers.insert(
            crate::headers::SIGNATURE.into(),
            crate::broker::text(&signed),
        );
        props = props.with_headers(headers);
    }
    let sent = match to {
        Destination::SharedExchange => {
            session
                .publish_confirmed(&topo.exchange, &routing_key, body, props)
                .await
        }
        Destination::OwnQueue => {
            let key = [(
                crate::headers::ROUTING_KEY,
                crate::broker::text(&routing_key),
            )];
            let props = crate::broker::with_headers(&props, &key);
            session
                .publish_confirmed("", &topo.queue, body, props)
                .await
        }
    };
    session.close().await;
    sent?;
    Ok(routing_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(kind: EventKind) -> Draft {
        Draft {
            kind,
            email: "smoke@example.com".into(),
            role: "student".into(),
            services: vec!["lms".into()],
            user_id: None,
        }
    }

    #[test]
    fn drafts_decode_as_the_worker_reads_them() {
        for kind in [EventKind::Created, EventKind::Updated, EventKind::Deleted] {
            let body = draft(kind).body();
            match event::decode(&body, kind.as_str(), 1 << 18) {
                Ok(Decoded::Event(e)) => assert_eq!(e.kind, kind),
                other => panic!("{kind:?}: {other:?}"),
            }
        }
    }
}
