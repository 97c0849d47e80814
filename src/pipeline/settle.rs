//! The last stage before the ack: every delivery's fate made final and visible. Failed
//! deliveries go to their retry tier or the dead-letter queue, held ones to the hold
//! queue, each copy confirmed; each gets its log line and metrics.

use super::Pipeline;
use super::record::{Decision, Events, Fate, Record};
use crate::broker::{self, Session};
use crate::decide::{Intent, Outcome, Planned};
use crate::disposition::{Disposition, Failure, disposition};
use crate::event::EventKind;
use crate::headers::{self, Route};
use crate::pause::Stop;
use crate::store::{DeadLetterEntry, EventMeta};
use lapin::message::Delivery;
use lapin::types::AMQPValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

impl Pipeline {
    pub(super) async fn settle(
        &self,
        session: &Session,
        batch: &[(Delivery, Instant)],
        records: Vec<Record>,
        events: &Events,
    ) -> Result<(), Stop> {
        let committed = Instant::now();
        let mut dead = Vec::new();
        for ((d, _), record) in batch.iter().zip(records) {
            let decision = match record.fate {
                Fate::Pending => unreachable!("every decoded event has a result"),
                Fate::Decided(Decision::Held) => {
                    self.park(session, d).await?;
                    Decision::Held
                }
                Fate::Decided(decision) => decision,
                Fate::Failed(_) if self.refused_but_stale(events, &record).await => {
                    Decision::Applied(Outcome::Stale)
                }
                Fate::Failed(failure) => {
                    let event = events.of(record.event, record.refused);
                    let who = event.map(|(p, _, kind)| (p.user_id, kind));
                    let (decision, reason) = self.send_on(session, d, &failure, who).await?;
                    if let (Some(reason), Some((p, meta, _))) = (reason, event) {
                        dead.push(dead_letter_entry(p, meta, reason));
                    }
                    decision
                }
            };
            self.metrics.outcome(decision);
            if let Decision::Applied(_) = decision {
                self.metrics
                    .committed((committed - record.received).as_secs_f64());
            }
            if let Some(p) = record.event {
                let latency_ms = (committed - record.received).as_secs_f64() * 1000.0;
                self.log_event(events, p, decision, latency_ms);
            }
        }
        if self.settings.audit_retention_days > 0
            && let Err(error) = self.store.audit_dead_letters(&dead).await
        {
            // The dead letters themselves are safe in the DLQ; only their trail rows are lost.
            tracing::warn!(%error, "could not record dead letters in the audit trail");
        }
        Ok(())
    }

    /// Whether the event the target table refused is older than what its user has (after
    /// this batch's commit): stale, as it would be with a value that fits, so it is acked
    /// rather than dead-lettered. When the watermarks cannot be read, it is refused.
    async fn refused_but_stale(&self, events: &Events, record: &Record) -> bool {
        let Some((planned, _, kind)) = record.refused.and_then(|r| events.of(None, Some(r))) else {
            return false;
        };
        match self.store.would_be_stale(planned).await {
            Ok(false) => false,
            Ok(true) => {
                let (user_id, event_type) = (planned.user_id, kind.as_str());
                tracing::info!(%user_id, event_type, decision = "stale", "event");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "could not read the watermark of a refused event");
                false
            }
        }
    }

    /// One line per event: who, what, the decision, and the email masked unless
    /// `LOG_PII=true`.
    fn log_event(&self, events: &Events, p: usize, decision: Decision, latency_ms: f64) {
        let (user_id, event_type) = (events.planned[p].user_id, events.kinds[p].as_str());
        match decision {
            Decision::Held => {
                let queue = &self.topo.hold;
                tracing::warn!(%user_id, event_type, decision = decision.as_str(), %queue, "event")
            }
            // Logged by `send_on`, with the attempt count and the error.
            Decision::Retried | Decision::DeadLettered => {}
            Decision::Applied(_) | Decision::Ignored => {
                let email = match &events.planned[p].intent {
                    Intent::Upsert(row) if self.settings.log_pii => Some(row.email.clone()),
                    Intent::Upsert(row) => Some(crate::redact::mask_email(&row.email)),
                    Intent::Deactivate(_) => None,
                };
                let decision = decision.as_str();
                tracing::info!(%user_id, email, event_type, decision, latency_ms, "event");
            }
        }
    }

    /// Parks a deactivation in the hold queue, confirmed, with its original routing key.
    async fn park(&self, session: &Session, d: &Delivery) -> Result<(), Stop> {
        let key = broker::text(&Route::of(d).routing_key());
        let props = broker::with_headers(&d.properties, &[(headers::ROUTING_KEY, key)]);
        Ok(session
            .publish_confirmed("", &self.topo.hold, &d.data, props)
            .await?)
    }

    /// Sends a failed delivery to its retry tier or the dead-letter queue, confirmed;
    /// returns the decision and, for a dead letter, its reason for the audit trail.
    async fn send_on(
        &self,
        session: &Session,
        d: &Delivery,
        failure: &Failure,
        who: Option<(uuid::Uuid, EventKind)>,
    ) -> Result<(Decision, Option<String>), Stop> {
        let (user_id, event_type) = match who {
            Some((id, kind)) => (id.to_string(), kind.as_str()),
            None => (String::new(), ""),
        };
        let route = Route::of(d);
        let attempts = route.attempts().saturating_add(1);
        let first_failed = route.first_failed_at().unwrap_or_else(|| {
            OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default()
        });
        let routing_key = route.routing_key();
        let tiers = self.topo.retry_queues.len();
        let attempt_headers = [
            (headers::ATTEMPTS, AMQPValue::LongLongInt(attempts.into())),
            (headers::FIRST_FAILED_AT, broker::text(&first_failed)),
            // Replaces a producer's own x-routing-key, which `dlq replay` would otherwise
            // take for the original.
            (headers::ROUTING_KEY, broker::text(&routing_key)),
        ];
        match disposition(failure, attempts, self.settings.max_attempts, tiers) {
            Disposition::Retry { tier } => {
                let (queue, delay) = &self.topo.retry_queues[tier];
                let error = failure_text(failure);
                tracing::info!(%user_id, event_type, decision = "retried", attempts, delay_ms = delay.as_millis() as u64, %error, "event");
                let extra = [(headers::ERROR, broker::text(&error))];
                let props =
                    broker::with_headers(&d.properties, &[&attempt_headers[..], &extra].concat());
                session.publish_confirmed("", queue, &d.data, props).await?;
                Ok((Decision::Retried, None))
            }
            Disposition::DeadLetter { kind, reason } => {
                self.metrics.dead_letter_kind(kind.as_str());
                tracing::warn!(%user_id, event_type, decision = "dead-lettered", kind = kind.as_str(), attempts, error = %reason, "event");
                let extra = [
                    (headers::ERROR, broker::text(&reason)),
                    (headers::ERROR_KIND, broker::text(kind.as_str())),
                ];
                let props =
                    broker::with_headers(&d.properties, &[&extra[..], &attempt_headers].concat());
                // Through the fanout exchange in front of the DLQ, so the routing key is kept.
                session
                    .publish_confirmed(&self.topo.dlx, &routing_key, &d.data, props)
                    .await?;
                Ok((
                    Decision::DeadLettered,
                    Some(format!("{}: {reason}", kind.as_str())),
                ))
            }
        }
    }
}

fn dead_letter_entry(planned: &Planned, meta: &EventMeta, reason: String) -> DeadLetterEntry {
    DeadLetterEntry {
        user_id: planned.user_id,
        event_id: meta.event_id.clone(),
        event_type: meta.event_type,
        event_ts: planned.key.timestamp,
        received_at: meta.received_at,
        reason,
    }
}

fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Permanent(why) | Failure::Refused(why) => why.clone(),
        Failure::EmailConflict => "email_conflict: email held by another active user".into(),
        Failure::BadSignature(why) => why.to_string(),
    }
}
