//! The properties of the copies this service publishes.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, LongString, ShortString};

/// The original properties with `extra` headers set: dead letters and retries keep the
/// publisher's content type, message id and headers.
pub fn with_headers(props: &BasicProperties, extra: &[(&str, AMQPValue)]) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    for (k, v) in extra {
        headers.insert(ShortString::from(*k), v.clone());
    }
    republished(props).with_headers(headers)
}

/// The properties of a copy this service publishes (retry, dead letter, held deactivation,
/// replay, release): the publisher's, persistent, and without its `expiration`. A TTL the
/// producer chose for its own queue would otherwise make a parked deactivation or a dead
/// letter vanish silently; our retry tiers set their delay on the queue, not the message.
pub fn republished(p: &BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default().with_delivery_mode(2);
    macro_rules! keep {
        ($($get:ident => $set:ident),*) => {
            $(if let Some(v) = p.$get() { out = out.$set(v.clone()); })*
        };
    }
    keep!(
        content_type => with_content_type,
        content_encoding => with_content_encoding,
        headers => with_headers,
        priority => with_priority,
        correlation_id => with_correlation_id,
        reply_to => with_reply_to,
        message_id => with_message_id,
        timestamp => with_timestamp,
        kind => with_type,
        user_id => with_user_id,
        app_id => with_app_id,
        cluster_id => with_cluster_id
    );
    out
}

pub fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn producers() -> BasicProperties {
        BasicProperties::default()
            .with_expiration("300".into())
            .with_message_id("m-1".into())
            .with_content_type("application/json".into())
            .with_delivery_mode(1)
            .with_priority(3)
    }

    #[test]
    fn a_copy_keeps_the_producers_properties_but_not_its_expiration() {
        let copy = republished(&producers());
        assert_eq!(copy.expiration(), &None);
        assert_eq!(copy.message_id().as_ref().map(|m| m.as_str()), Some("m-1"));
        assert_eq!(
            copy.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        assert_eq!(
            (copy.delivery_mode(), copy.priority()),
            (&Some(2), &Some(3))
        );
    }

    #[test]
    fn a_copy_with_headers_has_no_expiration_either() {
        let copy = with_headers(&producers(), &[("x-error", text("boom"))]);
        assert_eq!(copy.expiration(), &None);
        assert_eq!(
            crate::headers::header_str(&copy, "x-error").as_deref(),
            Some("boom")
        );
    }
}
