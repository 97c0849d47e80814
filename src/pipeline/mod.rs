//! One batch's path: decode, plan, reduce per user, apply in one transaction, send the
//! failures on (confirmed), then acknowledge everything with one `multiple` ack.

mod brake;
mod isolate;
mod send;

pub use isolate::{Trail, apply_isolated};

use crate::backoff::Backoff;
use crate::brake::Brake;
use crate::broker::{self, BrokerError, ROUTING_KEY_HEADER, Session, Topology};
use crate::decide::{self, Intent, Planned, UserBatch};
use crate::disposition::Failure;
use crate::event::{self, Decoded, EventKind};
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::signature::{self, SIGNATURE_HEADER};
use crate::store::{Commit, DeadLetterEntry, EventMeta, EventResult, Store};
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a batch is held while the database is unreachable before its deliveries are
/// handed back to the queue. Far below the broker's 30-minute consumer timeout.
const HOLD_DURING_OUTAGE: Duration = Duration::from_secs(20);

/// Why the pipeline stopped taking work.
#[derive(Debug)]
pub enum Stop {
    Shutdown,
    DatabaseDown,
    Broker(BrokerError),
}

impl From<BrokerError> for Stop {
    fn from(e: BrokerError) -> Self {
        Stop::Broker(e)
    }
}

impl From<lapin::Error> for Stop {
    fn from(e: lapin::Error) -> Self {
        Stop::Broker(e.into())
    }
}

#[derive(Clone)]
pub struct Pipeline {
    settings: Arc<Settings>,
    store: Store,
    membership: Membership,
    topo: Arc<Topology>,
    metrics: Arc<Metrics>,
    brake: Arc<Mutex<Brake>>,
    /// Set while the database is unreachable, so the pause is logged once, not per retry.
    paused: Arc<AtomicBool>,
}

/// One delivery's fate within a batch.
enum Fate {
    Done(&'static str, Option<(uuid::Uuid, EventKind)>),
    Failed(Failure, Option<(uuid::Uuid, EventKind)>),
    /// Parked in the hold queue by the mass-deactivation brake.
    Held(uuid::Uuid, EventKind),
}

impl Pipeline {
    pub fn new(settings: Arc<Settings>, store: Store, metrics: Arc<Metrics>) -> Self {
        let membership = Membership::new(&settings.service_name, &settings.all_access_roles);
        let topo = Arc::new(Topology::new(&settings));
        Self {
            store,
            membership,
            topo,
            brake: Arc::new(Mutex::new(Brake::new(
                settings.deactivation_brake,
                settings.deactivation_brake_window,
            ))),
            settings,
            metrics,
            paused: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn mark_paused(&self, error: &sqlx::Error) {
        self.metrics.set_database(false);
        if !self.paused.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "database unavailable, paused");
        }
    }

    fn mark_resumed(&self) {
        self.metrics.set_database(true);
        if self.paused.swap(false, Ordering::Relaxed) {
            tracing::info!("database reachable again; resuming");
        }
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// Probes the database with capped backoff until it answers; false if shut down first.
    pub async fn wait_for_database(&self, shutdown: &CancellationToken) -> bool {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            match self.store.ping().await {
                Ok(()) => {
                    self.mark_resumed();
                    return true;
                }
                Err(e) => self.mark_paused(&e),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    pub async fn process(
        &self,
        session: &Session,
        batch: Vec<(Delivery, Instant)>,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        self.poll_brake().await;
        tracing::debug!(deliveries = batch.len(), "batch");
        self.metrics.batch(batch.len());
        let mut fates: Vec<Option<Fate>> = Vec::with_capacity(batch.len());
        let mut planned: Vec<Planned> = Vec::new();
        let mut origin: Vec<(usize, EventKind)> = Vec::new();
        let mut meta: Vec<EventMeta> = Vec::new();
        let now = (OffsetDateTime::now_utc(), Instant::now());
        let rules = self.decode_rules(now.0);
        for (i, (d, received)) in batch.iter().enumerate() {
            let key = routing_key(d);
            self.metrics.received(&key);
            if !self.settings.event_signing_keys.is_empty() {
                let header = broker::header_str(&d.properties, SIGNATURE_HEADER);
                let keys = &self.settings.event_signing_keys;
                if let Err(bad) = signature::verify(keys, &d.data, header.as_deref()) {
                    fates.push(Some(Fate::Failed(Failure::BadSignature(bad.text()), None)));
                    continue;
                }
            }
            match event::decode_with(&d.data, &key, &rules) {
                Ok(Decoded::Event(e)) => {
                    planned.push(decide::plan(&e, &self.membership));
                    origin.push((i, e.kind));
                    meta.push(EventMeta {
                        event_id: e.event_id.clone(),
                        event_type: e.kind.as_str(),
                        received_at: now.0 - (now.1 - *received),
                    });
                    fates.push(None);
                }
                Ok(Decoded::Unknown { event_type }) => {
                    tracing::info!(%event_type, decision = "ignored", "unknown event type");
                    fates.push(Some(Fate::Done("ignored", None)));
                }
                Err(rejection) => {
                    fates.push(Some(Fate::Failed(Failure::Permanent(rejection.0), None)))
                }
            }
        }

        let (users, losers) = decide::reduce(&planned);
        let released_at = self.released(&batch, shutdown).await?;
        let released = |p: usize| released_at[origin[p].0];
        let users = self.brake_split(&planned, users, released, |p| {
            let (i, kind) = origin[p];
            fates[i] = Some(Fate::Held(planned[p].user_id, kind));
        });
        let trail = (self.settings.audit_retention_days > 0).then(|| Trail {
            service: &self.settings.service_name,
            meta: &meta,
        });
        let results = self
            .apply_holding(&planned, &users, &losers, trail, shutdown)
            .await?;
        self.brake_record(&results, released);
        for (p, result) in results {
            let (i, kind) = origin[p];
            let who = Some((planned[p].user_id, kind));
            fates[i] = Some(match result {
                EventResult::Done(outcome) => Fate::Done(outcome.as_str(), who),
                EventResult::EmailConflict => Fate::Failed(Failure::EmailConflict, who),
                EventResult::Rejected(why) => Fate::Failed(Failure::Refused(why), who),
            });
        }

        let committed = Instant::now();
        if !users.is_empty() {
            self.metrics.applied_now();
        }
        let mut planned_of = vec![None; batch.len()];
        for (p, (i, _)) in origin.iter().enumerate() {
            planned_of[*i] = Some(p);
        }
        let mut dead = Vec::new();
        for (i, ((d, received), fate)) in batch.iter().zip(fates).enumerate() {
            match fate.expect("every delivery has a fate") {
                Fate::Done(decision, Some((user_id, kind))) => {
                    let latency = (committed - *received).as_secs_f64();
                    self.metrics.outcome(decision);
                    self.metrics.committed(latency);
                    let latency_ms = latency * 1000.0;
                    let email = planned_of[i].and_then(|p| self.shown_email(&planned[p]));
                    tracing::info!(%user_id, email, event_type = kind.as_str(), decision, latency_ms, "event");
                }
                Fate::Done(decision, None) => self.metrics.outcome(decision),
                Fate::Failed(failure, who) => {
                    let dead_lettered = self.send_on(session, d, &failure, who).await?;
                    if let (Some(reason), Some(p)) = (dead_lettered, planned_of[i]) {
                        dead.push(DeadLetterEntry {
                            user_id: planned[p].user_id,
                            event_id: meta[p].event_id.clone(),
                            event_type: meta[p].event_type,
                            event_ts: planned[p].key.timestamp,
                            received_at: meta[p].received_at,
                            reason,
                        });
                    }
                }
                Fate::Held(user_id, kind) => {
                    tracing::warn!(%user_id, event_type = kind.as_str(), decision = "held", queue = %self.topo.hold, "event");
                    self.metrics.outcome("held");
                    let key = broker::text(&routing_key(d));
                    let props = broker::with_headers(&d.properties, &[(ROUTING_KEY_HEADER, key)]);
                    session
                        .publish_confirmed("", &self.topo.hold, &d.data, props)
                        .await?;
                }
            }
        }
        if self.settings.audit_retention_days > 0
            && let Err(error) = self.store.audit_dead_letters(&dead).await
        {
            // The dead letters themselves are safe in the DLQ; only their trail rows are lost.
            tracing::warn!(%error, "could not record dead letters in the audit trail");
        }
        // Ack only now: the changes are committed and every retry or dead letter confirmed.
        // One `multiple` ack covers the whole batch (tags rise on a channel).
        let (last, _) = batch.last().expect("a batch is never empty");
        if !last.acker.ack(BasicAckOptions { multiple: true }).await? {
            return Err(Stop::Broker(BrokerError::NotConfirmed("ack".into())));
        }
        Ok(())
    }

    /// Applies the batch, holding it while the database is unreachable; after
    /// `HOLD_DURING_OUTAGE` the session ends and the deliveries return to the queue
    /// unacked, so nothing is dead-lettered or counted as an attempt because of an outage.
    async fn apply_holding(
        &self,
        planned: &[Planned],
        users: &[UserBatch],
        losers: &[usize],
        trail: Option<Trail<'_>>,
        shutdown: &CancellationToken,
    ) -> Result<Vec<(usize, EventResult)>, Stop> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let started = Instant::now();
        loop {
            match apply_isolated(&self.store, planned, users, losers, Commit::Yes, trail).await {
                Ok(results) => {
                    self.mark_resumed();
                    return Ok(results);
                }
                Err(e) => {
                    self.mark_paused(&e);
                    if started.elapsed() > HOLD_DURING_OUTAGE {
                        return Err(Stop::DatabaseDown);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Err(Stop::Shutdown),
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    fn decode_rules(&self, now: OffsetDateTime) -> event::Rules {
        event::Rules {
            max_body: self.settings.max_body_bytes,
            latest: Some(now + self.settings.max_future_skew),
            signed: !self.settings.event_signing_keys.is_empty(),
        }
    }

    /// The email for a log line: as it is with `LOG_PII=true`, masked otherwise.
    fn shown_email(&self, p: &Planned) -> Option<String> {
        let Intent::Upsert(row) = &p.intent else {
            return None;
        };
        Some(if self.settings.log_pii {
            row.email.clone()
        } else {
            crate::redact::mask_email(&row.email)
        })
    }
}

/// The routing key the event was published with (see `headers` for when the header counts).
fn routing_key(d: &Delivery) -> String {
    crate::headers::Route::of(d).routing_key()
}
