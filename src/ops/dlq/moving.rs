//! Moving messages back to the main queue: `dlq replay`, and `brake release` through it.
//!
//! Replay publishes a copy to the main queue and acknowledges the dead letter only after
//! the broker confirmed the copy, so a replay that dies midway duplicates at most one
//! message (harmless: events are idempotent) and loses none. It takes at most the letters
//! present when it starts: those that fail again go back to the DLQ's tail within
//! milliseconds, and a loop until the queue is empty would never end.

use super::{DeadLetter, ack, get, ready, to_tail};
use crate::broker::{self, BrokerError, Session, Topology};
use crate::disposition::DeadKind;
use crate::headers;
use crate::settings::Settings;
use lapin::BasicProperties;
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// Headers that describe a failed attempt; a replayed message starts afresh without them.
/// A brake release's token goes too: a replay is not the operator's release of the brake.
const ATTEMPT_HEADERS: [&str; 6] = [
    headers::ATTEMPTS,
    headers::FIRST_FAILED_AT,
    headers::ERROR,
    headers::ERROR_KIND,
    headers::DEATH,
    headers::RELEASE,
];

/// After moving messages back, how long the source queue's depth must stay still (with
/// the main queue drained) before what came back is counted, and the most we wait.
const SETTLE_QUIET: Duration = Duration::from_secs(1);
const SETTLE_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Replayed {
    pub replayed: usize,
    /// Looked at but left in the dead-letter queue (another kind), moved to its tail.
    pub kept: usize,
    /// How many messages the source queue gained while moving and settling (until it stayed
    /// still for a second with the main queue drained, at most 10 s): copies that failed,
    /// or were parked, again straight away, plus anything new that arrived meanwhile.
    /// Retries that fail later are not seen. `None`: nothing consumes the main queue, so
    /// nothing could have come back yet.
    pub came_back: Option<u32>,
}

impl Replayed {
    /// The tail of the commands' report line.
    pub fn came_back_text(&self) -> String {
        match self.came_back {
            Some(n) => format!("{n} came straight back"),
            None => "no worker consumes the main queue yet, so none came back".into(),
        }
    }

    /// Some of what was moved came straight back (see `came_back`). A move that moved
    /// nothing cannot have had anything come back, whatever else arrived meanwhile.
    pub fn came_straight_back(&self) -> bool {
        self.replayed > 0 && self.came_back.is_some_and(|n| n > 0)
    }
}

/// Moves dead letters (of `kind`, if given; at most `limit`) back to the main queue with
/// their attempt count reset.
pub async fn replay(
    settings: &Settings,
    kind: Option<DeadKind>,
    limit: Option<usize>,
) -> Result<Replayed, BrokerError> {
    let topo = Topology::new(settings);
    let session = Session::open(settings, &topo).await?;
    let moving = Moving {
        from: &topo.dlq,
        kind,
        limit,
        stamp: None,
    };
    let moved = move_back(&session, &topo, &moving).await;
    session.close().await;
    moved
}

/// What `move_back` moves: from which queue, only which kind (dead letters only), at most
/// how many, and the brake release token to stamp each copy with.
pub(crate) struct Moving<'a> {
    pub from: &'a str,
    pub kind: Option<DeadKind>,
    pub limit: Option<usize>,
    pub stamp: Option<&'a str>,
}

/// Moves messages to the main queue: each copy confirmed before its original is
/// acknowledged. Takes at most the messages present at the start, so it ends even when
/// they come straight back. Shared by `dlq replay` and `brake release`.
pub(crate) async fn move_back(
    session: &Session,
    topo: &Topology,
    moving: &Moving<'_>,
) -> Result<Replayed, BrokerError> {
    let present = ready(&session.connection, moving.from).await?;
    let mut done = Replayed {
        replayed: 0,
        kept: 0,
        came_back: None,
    };
    let mut taken = 0;
    while taken < present && moving.limit.is_none_or(|l| done.replayed < l) {
        let Some(m) = get(&session.consume, moving.from).await? else {
            break;
        };
        taken += 1;
        let letter = DeadLetter::read(0, &m);
        if moving
            .kind
            .is_some_and(|k| letter.kind.as_deref() != Some(k.as_str()))
        {
            to_tail(session, topo, &m).await?;
            done.kept += 1;
            continue;
        }
        let props = fresh_properties(&m.delivery.properties, &letter.routing_key, moving.stamp);
        // Straight to our queue through the default exchange, as the retry tiers do: the
        // auth exchange would hand the message to every other service again.
        session
            .publish_confirmed("", &topo.queue, &m.delivery.data, props)
            .await?;
        ack(&m).await?;
        done.replayed += 1;
    }
    let left = present.saturating_sub(done.replayed as u32);
    done.came_back = came_back(session, topo, moving.from, left).await?;
    Ok(done)
}

/// What `from` gained over the `left` messages it kept, once things settled (see
/// `Replayed::came_back`).
async fn came_back(
    session: &Session,
    topo: &Topology,
    from: &str,
    left: u32,
) -> Result<Option<u32>, BrokerError> {
    let conn = &session.connection;
    let consumers = broker::queue_counts(conn, &topo.queue).await?;
    if consumers.is_none_or(|(_, c)| c == 0) {
        return Ok(None);
    }
    let deadline = Instant::now() + SETTLE_MAX;
    let (mut depth, mut still_since) = (ready(conn, from).await?, Instant::now());
    loop {
        let drained = ready(conn, &topo.queue).await? == 0;
        if (drained && still_since.elapsed() >= SETTLE_QUIET) || Instant::now() >= deadline {
            return Ok(Some(depth.saturating_sub(left)));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = ready(conn, from).await?;
        if now != depth {
            (depth, still_since) = (now, Instant::now());
        }
    }
}

/// A moved message's properties: the attempt headers dropped, the routing key kept, and
/// the release token set when a brake release moves it.
fn fresh_properties(
    p: &BasicProperties,
    routing_key: &str,
    stamp: Option<&str>,
) -> BasicProperties {
    let mut headers = lapin::types::FieldTable::default();
    if let Some(old) = p.headers() {
        for (k, v) in old.inner() {
            if !ATTEMPT_HEADERS.contains(&k.as_str()) {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    headers.insert(headers::ROUTING_KEY.into(), broker::text(routing_key));
    if let Some(token) = stamp {
        headers.insert(headers::RELEASE.into(), broker::text(token));
    }
    broker::republished(p).with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::AMQPValue;

    #[test]
    fn only_moved_letters_can_come_straight_back() {
        let r = |replayed, came_back| Replayed {
            replayed,
            kept: 0,
            came_back,
        };
        assert!(r(5, Some(2)).came_straight_back());
        assert!(!r(5, Some(0)).came_straight_back());
        assert!(!r(5, None).came_straight_back(), "nobody consumes yet");
        assert!(
            !r(0, Some(1)).came_straight_back(),
            "a new letter, not a replayed one"
        );
    }

    #[test]
    fn a_moved_copy_starts_afresh_without_the_producers_expiration() {
        let mut headers = lapin::types::FieldTable::default();
        headers.insert(crate::headers::ATTEMPTS.into(), AMQPValue::LongLongInt(3));
        headers.insert(headers::RELEASE.into(), broker::text("forged"));
        headers.insert("trace".into(), broker::text("t-1"));
        let failed = BasicProperties::default()
            .with_expiration("300".into())
            .with_headers(headers);
        let replayed = fresh_properties(&failed, "user.deleted", None);
        assert_eq!(replayed.expiration(), &None);
        assert_eq!(headers::header_int(&replayed, headers::ATTEMPTS), None);
        assert_eq!(headers::header_str(&replayed, headers::RELEASE), None);
        assert_eq!(
            headers::header_str(&replayed, "trace").as_deref(),
            Some("t-1")
        );
        let key = headers::header_str(&replayed, headers::ROUTING_KEY);
        assert_eq!(key.as_deref(), Some("user.deleted"));
        let released = fresh_properties(&failed, "user.deleted", Some("tok"));
        let token = headers::header_str(&released, headers::RELEASE);
        assert_eq!(token.as_deref(), Some("tok"));
    }
}
