//! `user-sync dlq`: look into the dead-letter queue without consuming it, move messages
//! back to the main queue once their cause is fixed, or purge it.
//!
//! Browsing turns the queue over once: each dead letter is taken with `basic.get`, a copy
//! (same body, routing key and headers) is published to the queue's tail and confirmed,
//! and only then is the original acknowledged. Handing unacknowledged messages back would
//! be simpler, but a quorum queue counts every such return against its `delivery-limit`,
//! and the DLQ has no dead-letter target: browsing would delete dead letters. A full turn
//! keeps the order; a letter dead-lettered during the turn lands among the copies, and a
//! browse that dies midway leaves at most one duplicate.
//!
//! Replay publishes a copy to the main queue and acknowledges the dead letter only after
//! the broker confirmed the copy, so a replay that dies midway duplicates at most one
//! message (harmless: events are idempotent) and loses none. It takes at most the letters
//! present when it starts: those that fail again go back to the DLQ's tail within
//! milliseconds, and a loop until the queue is empty would never end.

use crate::broker::{self, BrokerError, Session, Topology};
use crate::headers;
use crate::redact::{redact, redact_body};
use crate::settings::Settings;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Channel};
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

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeadLetter {
    pub position: usize,
    pub routing_key: String,
    pub kind: Option<String>,
    pub error: Option<String>,
    pub attempts: Option<i64>,
    pub first_failed_at: Option<String>,
    /// From the body, when it is readable: what `explain` and support staff look for.
    pub user_id: Option<String>,
}

impl DeadLetter {
    fn read(position: usize, m: &BasicGetMessage) -> Self {
        let p = &m.delivery.properties;
        let user_id = serde_json::from_slice::<serde_json::Value>(&m.delivery.data)
            .ok()
            .and_then(|v| v.get("user_id")?.as_str().map(str::to_string));
        DeadLetter {
            position,
            routing_key: headers::header_str(p, headers::ROUTING_KEY)
                .unwrap_or_else(|| m.delivery.routing_key.as_str().to_string()),
            kind: headers::header_str(p, headers::ERROR_KIND),
            error: headers::header_str(p, headers::ERROR),
            attempts: headers::header_int(p, headers::ATTEMPTS),
            first_failed_at: headers::header_str(p, headers::FIRST_FAILED_AT),
            user_id,
        }
    }
}

pub fn list_table(letters: &[DeadLetter]) -> String {
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|d| {
            let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            vec![
                d.position.to_string(),
                d.routing_key.clone(),
                o(&d.kind),
                o(&d.user_id),
                d.attempts.map_or("-".into(), |a| a.to_string()),
                o(&d.first_failed_at),
                o(&d.error),
            ]
        })
        .collect();
    let header = [
        "#",
        "routing key",
        "kind",
        "user",
        "attempts",
        "first failed at",
        "error",
    ];
    super::table(&header, &rows)
}

async fn browse_channel(settings: &Settings) -> Result<(lapin::Connection, Channel), BrokerError> {
    let conn = broker::connect(settings).await?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

/// Messages ready in a queue; 0 if it does not exist.
async fn ready(conn: &lapin::Connection, queue: &str) -> Result<u32, BrokerError> {
    Ok(broker::queue_counts(conn, queue)
        .await?
        .map_or(0, |(ready, _)| ready))
}

/// Puts a dead letter back at the DLQ's tail: a confirmed copy through the DLQ's fanout
/// exchange (so its routing key stays), then the original is acknowledged.
async fn to_tail(
    session: &Session,
    topo: &Topology,
    m: &BasicGetMessage,
) -> Result<(), BrokerError> {
    let props = broker::republished(&m.delivery.properties);
    let key = m.delivery.routing_key.as_str();
    session
        .publish_confirmed(&topo.dlx, key, &m.delivery.data, props)
        .await?;
    ack(m).await
}

async fn ack(m: &BasicGetMessage) -> Result<(), BrokerError> {
    if m.delivery.acker.ack(BasicAckOptions::default()).await? {
        Ok(())
    } else {
        Err(BrokerError::NotConfirmed("ack".into()))
    }
}

/// Turns the DLQ over once (see the module's notes), showing each letter to `visit` with
/// its position.
async fn turn_over(
    settings: &Settings,
    mut visit: impl FnMut(usize, &BasicGetMessage),
) -> Result<(), BrokerError> {
    let topo = Topology::new(settings);
    let session = Session::open_undeclared(settings).await?;
    let turned = async {
        let present = ready(&session.connection, &topo.dlq).await?;
        for position in 1..=present as usize {
            let Some(m) = get(&session.consume, &topo.dlq).await? else {
                break;
            };
            visit(position, &m);
            to_tail(&session, &topo, &m).await?;
        }
        Ok(())
    }
    .await;
    session.close().await;
    turned
}

async fn get(ch: &Channel, queue: &str) -> Result<Option<BasicGetMessage>, BrokerError> {
    Ok(ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await?)
}

/// The first `limit` dead letters, oldest first; nothing is consumed.
pub async fn list(settings: &Settings, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
    browse(settings, limit, |_| true).await
}

/// The dead letters (among the first `scan`) for one of `users`, or whose body carries
/// `email`: what `explain` reports for a user. Nothing is consumed.
pub async fn find(
    settings: &Settings,
    users: &[uuid::Uuid],
    email: Option<&str>,
    scan: usize,
) -> Result<Vec<DeadLetter>, BrokerError> {
    let ids: Vec<String> = users.iter().map(|u| u.to_string()).collect();
    browse(settings, scan, |m| {
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&m.delivery.data) else {
            return false;
        };
        let id = body.get("user_id").and_then(|v| v.as_str());
        let mail = body
            .get("user")
            .and_then(|u| u.get("email"))
            .and_then(|v| v.as_str());
        id.is_some_and(|id| ids.iter().any(|i| i.eq_ignore_ascii_case(id)))
            || email
                .zip(mail)
                .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
    })
    .await
}

async fn browse(
    settings: &Settings,
    limit: usize,
    keep: impl Fn(&BasicGetMessage) -> bool,
) -> Result<Vec<DeadLetter>, BrokerError> {
    let mut out = Vec::new();
    turn_over(settings, |position, m| {
        if position <= limit && keep(m) {
            out.push(DeadLetter::read(position, m));
        }
    })
    .await?;
    Ok(out)
}

/// One dead letter in full: its headers, and its body with every password hash masked.
#[derive(Debug, Serialize)]
pub struct Shown {
    pub letter: DeadLetter,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub async fn show(settings: &Settings, position: usize) -> Result<Option<Shown>, BrokerError> {
    let mut found = None;
    turn_over(settings, |n, m| {
        if n == position {
            found = Some(shown(n, m));
        }
    })
    .await?;
    Ok(found)
}

fn shown(position: usize, m: &BasicGetMessage) -> Shown {
    let headers = m
        .delivery
        .properties
        .headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .map(|(k, v)| (k.to_string(), redact(&header_text(v))))
                .collect()
        })
        .unwrap_or_default();
    Shown {
        letter: DeadLetter::read(position, m),
        headers,
        body: redact_body(&m.delivery.data),
    }
}

pub fn show_text(s: &Shown) -> String {
    let mut out = list_table(std::slice::from_ref(&s.letter));
    out += "\nheaders:\n";
    for (k, v) in &s.headers {
        out += &format!("  {k}: {v}\n");
    }
    out += "\nbody:\n";
    out += &s.body;
    out + "\n"
}

fn header_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

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
}

/// Moves dead letters (of `kind`, if given; at most `limit`) back to the main queue with
/// their attempt count reset.
pub async fn replay(
    settings: &Settings,
    kind: Option<&str>,
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
    pub kind: Option<&'a str>,
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
            .is_some_and(|k| letter.kind.as_deref() != Some(k))
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

/// Empties the dead-letter queue; returns how many messages it held.
pub async fn purge(settings: &Settings) -> Result<u32, BrokerError> {
    let topo = Topology::new(settings);
    let (conn, ch) = browse_channel(settings).await?;
    let n = ch
        .queue_purge(topo.dlq.as_str().into(), QueuePurgeOptions::default())
        .await?;
    let _ = conn.close(200, "purged".into()).await;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

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
