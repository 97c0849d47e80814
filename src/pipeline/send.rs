//! Where a failed delivery goes: its retry tier or the dead-letter queue, confirmed.

use super::{Pipeline, Stop};
use crate::broker::{self, Session};
use crate::disposition::{Disposition, Failure, disposition};
use crate::event::EventKind;
use crate::headers::{ATTEMPTS, FIRST_FAILED_AT, ROUTING_KEY, Route};
use lapin::message::Delivery;
use lapin::types::AMQPValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

impl Pipeline {
    /// Sends a failed delivery to its retry tier or the dead-letter queue, confirmed.
    pub(super) async fn send_on(
        &self,
        session: &Session,
        d: &Delivery,
        failure: &Failure,
        who: Option<(uuid::Uuid, EventKind)>,
    ) -> Result<Option<String>, Stop> {
        let route = Route::of(d);
        let attempts = route.attempts().saturating_add(1);
        let first_failed = route.first_failed_at().unwrap_or_else(|| {
            OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default()
        });
        let routing_key = route.routing_key();
        let tiers = self.topo.retry_queues.len();
        let (user_id, event_type) = match who {
            Some((id, kind)) => (id.to_string(), kind.as_str()),
            None => (String::new(), ""),
        };
        match disposition(failure, attempts, self.settings.max_attempts, tiers) {
            Disposition::Retry { tier } => {
                let (queue, delay) = &self.topo.retry_queues[tier];
                self.metrics.outcome("retried");
                tracing::info!(%user_id, event_type, decision = "retried", attempts, delay_ms = delay.as_millis() as u64, error = %failure_text(failure), "event");
                let props = broker::with_headers(
                    &d.properties,
                    &[
                        (ATTEMPTS, AMQPValue::LongLongInt(attempts.into())),
                        (FIRST_FAILED_AT, broker::text(&first_failed)),
                        (ROUTING_KEY, broker::text(&routing_key)),
                        ("x-error", broker::text(&failure_text(failure))),
                    ],
                );
                session.publish_confirmed("", queue, &d.data, props).await?;
                Ok(None)
            }
            Disposition::DeadLetter { kind, reason } => {
                self.metrics.dead_lettered(kind.as_str());
                tracing::warn!(%user_id, event_type, decision = "dead-lettered", kind = kind.as_str(), attempts, error = %reason, "event");
                let props = broker::with_headers(
                    &d.properties,
                    &[
                        ("x-error", broker::text(&reason)),
                        ("x-error-kind", broker::text(kind.as_str())),
                        (ATTEMPTS, AMQPValue::LongLongInt(attempts.into())),
                        (FIRST_FAILED_AT, broker::text(&first_failed)),
                        // Replaces a producer's own x-routing-key, which `dlq replay`
                        // would otherwise take for the original.
                        (ROUTING_KEY, broker::text(&routing_key)),
                    ],
                );
                // Through the fanout exchange in front of the DLQ, so the routing key is kept.
                session
                    .publish_confirmed(&self.topo.dlx, &routing_key, &d.data, props)
                    .await?;
                Ok(Some(format!("{}: {reason}", kind.as_str())))
            }
        }
    }
}

fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Permanent(why) | Failure::Refused(why) => why.clone(),
        Failure::EmailConflict => "email_conflict: email held by another active user".into(),
        Failure::BadSignature(why) => why.to_string(),
    }
}
