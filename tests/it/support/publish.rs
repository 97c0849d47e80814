//! Publishing to a test's exchange as the auth system does: confirmed, persistent, with
//! the headers a producer (or an attacker) may set.

use super::{confirming, event, with_email_of};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};

pub(crate) struct Publisher {
    _conn: Connection,
    pub(crate) ch: Channel,
    exchange: String,
}

impl Publisher {
    /// A confirming publisher to `exchange` through the broker at `url`.
    pub(crate) async fn connect(url: &str, exchange: &str) -> Self {
        let (conn, ch) = confirming(url).await;
        Publisher {
            _conn: conn,
            ch,
            exchange: exchange.to_string(),
        }
    }

    pub(crate) async fn publish(&self, routing_key: &str, body: &[u8]) {
        self.publish_with(routing_key, body, BasicProperties::default())
            .await
    }

    pub(crate) async fn publish_with(
        &self,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) {
        let confirm = self
            .ch
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props.with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }

    /// Publishes the well-formed `event(kind, user, ts, role, services)`.
    pub(crate) async fn send(&self, kind: &str, user: u8, ts: &str, role: &str, services: &[&str]) {
        self.publish_json(&event(kind, user, ts, role, services))
            .await;
    }

    /// Publishes an update of student `user` (of this service) at `ts`.
    pub(crate) async fn update(&self, user: u8, ts: &str) {
        self.send("user.updated", user, ts, "student", &["lms"])
            .await;
    }

    /// Publishes the deletion of student `user` (of this service) at `ts`.
    pub(crate) async fn delete(&self, user: u8, ts: &str) {
        self.send("user.deleted", user, ts, "student", &["lms"])
            .await;
    }

    /// The most common event of these tests: a student created at the start of 2024.
    pub(crate) async fn create_student(&self, user: u8, services: &[&str]) {
        self.send(
            "user.created",
            user,
            "2024-01-01T00:00:00Z",
            "student",
            services,
        )
        .await;
    }

    /// User 1 active, then user 2 created with user 1's email: an email conflict that
    /// never resolves by itself (retried, then dead-lettered).
    pub(crate) async fn email_clash(&self) {
        self.create_student(1, &["lms"]).await;
        let clash = with_email_of("user.created", 2, 1, "2024-01-02T00:00:00Z");
        self.publish_json(&clash).await;
    }

    pub(crate) async fn publish_json(&self, event: &serde_json::Value) {
        let key = event["event_type"]
            .as_str()
            .unwrap_or("user.updated")
            .to_string();
        self.publish(&key, event.to_string().as_bytes()).await;
    }
}

pub(crate) fn header(d: &lapin::message::Delivery, key: &str) -> Option<String> {
    user_sync::headers::header_str(&d.properties, key)
}

/// Properties carrying one header.
pub(crate) fn with_header(key: &str, value: AMQPValue) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(key.into(), value);
    BasicProperties::default().with_headers(headers)
}

/// Properties carrying `x-signature`: `signature`.
pub(crate) fn signed_with(signature: &str) -> BasicProperties {
    with_header(
        user_sync::headers::SIGNATURE,
        user_sync::broker::text(signature),
    )
}

/// Properties carrying the signature of `body` with `key`.
pub(crate) fn signed_by(key: &str, body: &[u8]) -> BasicProperties {
    signed_with(&user_sync::signature::sign(&key.to_string().into(), body))
}

/// Fails the test unless `letter` was dead-lettered as `kind` after `attempts` attempts.
pub(crate) fn assert_dead_letter(letter: &lapin::message::Delivery, kind: &str, attempts: i64) {
    assert_eq!(header(letter, "x-error-kind").as_deref(), Some(kind));
    assert_eq!(
        user_sync::headers::header_int(&letter.properties, "x-attempts"),
        Some(attempts)
    );
}
