//! The first stage: check the signature, decode the body, plan the event.

use super::Pipeline;
use super::record::{Decision, Events, Fate, Record};
use crate::decide;
use crate::disposition::Failure;
use crate::event::{self, Decoded};
use crate::headers::{Route, SIGNATURE};
use crate::signature;
use lapin::message::Delivery;
use time::OffsetDateTime;
use tokio::time::Instant;

impl Pipeline {
    /// One record per delivery; the decoded events planned beside them.
    pub(super) fn decode(&self, batch: &[(Delivery, Instant)]) -> (Vec<Record>, Events) {
        let now = (OffsetDateTime::now_utc(), Instant::now());
        let rules = event::Rules {
            max_body: self.settings.max_body_bytes,
            latest: Some(now.0 + self.settings.max_future_skew),
            signed: !self.settings.event_signing_keys.is_empty(),
        };
        let mut events = Events::default();
        let records = batch
            .iter()
            .enumerate()
            .map(|(i, (d, received))| {
                let key = Route::of(d).routing_key();
                self.metrics.received(&key);
                let received_at = now.0 - (now.1 - *received);
                let mut refused = None;
                let fate = match self.verify(d) {
                    Err(failure) => Fate::Failed(failure),
                    Ok(()) => match event::decode_with(&d.data, &key, &rules) {
                        Ok(Decoded::Event(e)) => {
                            let mut planned = decide::plan(&e, &self.membership);
                            match self.refused(&mut planned) {
                                Some(why) => {
                                    refused = Some(events.refuse(planned, &e, received_at));
                                    Fate::Failed(Failure::Permanent(why))
                                }
                                None => {
                                    events.push(planned, &e, received_at, i);
                                    Fate::Pending
                                }
                            }
                        }
                        Ok(Decoded::Unknown { event_type }) => {
                            tracing::info!(%event_type, decision = "ignored", "unknown event type");
                            Fate::Decided(Decision::Ignored)
                        }
                        Err(rejection) => Fate::Failed(Failure::Permanent(rejection.0)),
                    },
                };
                let event = matches!(fate, Fate::Pending).then(|| events.origin.len() - 1);
                Record {
                    received: *received,
                    event,
                    refused,
                    fate,
                }
            })
            .collect();
        (records, events)
    }

    /// Why the target table refuses the event's row (a computed column too long), before
    /// anything of it is applied.
    fn refused(&self, planned: &mut decide::Planned) -> Option<String> {
        let target = self.settings.target_table.as_ref()?;
        target.refuses(planned)
    }

    /// With `EVENT_SIGNING_KEYS` set, the body's signature.
    fn verify(&self, d: &Delivery) -> Result<(), Failure> {
        let keys = &self.settings.event_signing_keys;
        if keys.is_empty() {
            return Ok(());
        }
        let header = crate::headers::header_str(&d.properties, SIGNATURE);
        signature::verify(keys, &d.data, header.as_deref())
            .map_err(|bad| Failure::BadSignature(bad.text()))
    }
}
