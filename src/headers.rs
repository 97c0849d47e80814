//! The headers this service sets on its own copies of a message (retries, held and replayed
//! messages), and when to believe them.
//!
//! Our copies reach the main queue through the default exchange: the retry tiers dead-letter
//! there, and `dlq replay` and `brake release` publish there. Producers publish to the auth
//! exchange, so on a delivery that came through it these headers are a producer's and are
//! ignored: an `x-routing-key` there could turn an update into a deletion, and an
//! `x-attempts` could skip the retries.

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::AMQPValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The original routing key, carried through the retry queues, which hand messages back
/// through the default exchange under the queue's own name.
pub const ROUTING_KEY: &str = "x-routing-key";
/// Failed deliveries of this message so far.
pub const ATTEMPTS: &str = "x-attempts";
pub const FIRST_FAILED_AT: &str = "x-first-failed-at";
/// On a dead letter: the reason in words (never a field value) and its kind.
pub const ERROR: &str = "x-error";
pub const ERROR_KIND: &str = "x-error-kind";
/// RabbitMQ's own record of a message's dead-lettering.
pub const DEATH: &str = "x-death";
/// The producer's HMAC of the body, when events are signed.
pub const SIGNATURE: &str = "x-signature";
/// Stamped by `brake release` on each deactivation it moves back: the token of the release
/// it recorded in the brake log.
pub const RELEASE: &str = "x-brake-release";

/// How one delivery reached us: what its own headers may be trusted for.
pub(crate) struct Route<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    props: &'a BasicProperties,
}

impl<'a> Route<'a> {
    pub(crate) fn of(d: &'a Delivery) -> Self {
        Self::new(d.exchange.as_str(), d.routing_key.as_str(), &d.properties)
    }

    pub(crate) fn new(exchange: &'a str, routing_key: &'a str, props: &'a BasicProperties) -> Self {
        Self {
            exchange,
            routing_key,
            props,
        }
    }

    /// Came back through the default exchange: one of our copies.
    fn ours(&self) -> bool {
        self.exchange.is_empty()
    }

    /// The routing key the event was published with: our copies arrive under our queue's
    /// name and carry the original in `x-routing-key`.
    pub(crate) fn routing_key(&self) -> String {
        self.ours()
            .then(|| header_str(self.props, ROUTING_KEY))
            .flatten()
            .unwrap_or_else(|| self.routing_key.to_string())
    }

    /// Failed deliveries of this message before this one. Whatever the header holds
    /// (negative, huge, not a number), the answer stays within 0..=u32::MAX.
    pub(crate) fn attempts(&self) -> u32 {
        self.ours()
            .then(|| header_int(self.props, ATTEMPTS))
            .flatten()
            .map_or(0, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX))
    }

    /// The `brake release` that moved this copy back, if it is one of our copies: a
    /// producer's delivery never passes the brake on a token it carries.
    pub(crate) fn release_token(&self) -> Option<String> {
        self.ours()
            .then(|| header_str(self.props, RELEASE))
            .flatten()
    }

    /// When the first delivery failed, if it is one of our copies and the header is a
    /// timestamp.
    pub(crate) fn first_failed_at(&self) -> Option<String> {
        self.ours()
            .then(|| header_str(self.props, FIRST_FAILED_AT))
            .flatten()
            .filter(|s| s.len() <= 64 && OffsetDateTime::parse(s, &Rfc3339).is_ok())
    }
}

/// Reads a string header, whatever AMQP string type the publisher chose.
pub fn header_str(props: &BasicProperties, key: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Reads an integer header.
pub fn header_int(props: &BasicProperties, key: &str) -> Option<i64> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some((*v).into()),
        AMQPValue::LongUInt(v) => Some((*v).into()),
        AMQPValue::ShortInt(v) => Some((*v).into()),
        AMQPValue::ShortShortInt(v) => Some((*v).into()),
        AMQPValue::ShortShortUInt(v) => Some((*v).into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldTable};

    fn props(headers: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut t = FieldTable::default();
        for (k, v) in headers {
            t.insert((*k).into(), v.clone());
        }
        BasicProperties::default().with_headers(t)
    }

    const AUTH: &str = "user_events";

    #[test]
    fn a_producer_cannot_choose_the_routing_key() {
        let p = props(&[(ROUTING_KEY, crate::broker::text("user.deleted"))]);
        assert_eq!(
            Route::new(AUTH, "user.updated", &p).routing_key(),
            "user.updated"
        );
        assert_eq!(Route::new("", "q", &p).routing_key(), "user.deleted");
        let none = props(&[]);
        assert_eq!(Route::new("", "q", &none).routing_key(), "q");
    }

    #[test]
    fn hostile_attempt_counts_neither_panic_nor_skip_retries() {
        let values = [
            AMQPValue::LongLongInt(i64::MAX),
            AMQPValue::LongLongInt(-5),
            AMQPValue::LongInt(i32::MIN),
            crate::broker::text("abc"),
            AMQPValue::Boolean(true),
        ];
        for v in values {
            let p = props(&[(ATTEMPTS, v.clone())]);
            assert_eq!(Route::new(AUTH, "user.updated", &p).attempts(), 0, "{v:?}");
        }
        let p = props(&[(ATTEMPTS, AMQPValue::LongLongInt(i64::MAX))]);
        assert_eq!(Route::new("", "q", &p).attempts(), u32::MAX);
        let p = props(&[(ATTEMPTS, AMQPValue::LongLongInt(-5))]);
        assert_eq!(Route::new("", "q", &p).attempts(), 0);
        let p = props(&[(ATTEMPTS, AMQPValue::LongLongInt(2))]);
        assert_eq!(Route::new("", "q", &p).attempts(), 2);
    }

    #[test]
    fn first_failed_at_is_ours_and_a_timestamp() {
        let good = props(&[(FIRST_FAILED_AT, crate::broker::text("2024-01-01T00:00:00Z"))]);
        assert_eq!(
            Route::new("", "q", &good).first_failed_at().as_deref(),
            Some("2024-01-01T00:00:00Z")
        );
        assert_eq!(
            Route::new(AUTH, "user.created", &good).first_failed_at(),
            None
        );
        let junk = props(&[(FIRST_FAILED_AT, crate::broker::text("yesterday"))]);
        assert_eq!(Route::new("", "q", &junk).first_failed_at(), None);
    }
}
