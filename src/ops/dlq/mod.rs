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
//! Replay and the brake's release move messages back to the main queue (`moving`).

mod moving;

pub(crate) use moving::{Moving, move_back};
pub use moving::{Replayed, replay};

use crate::broker::{self, BrokerError, Session, Topology};
use crate::headers;
use crate::redact::{redact, redact_body};
use crate::settings::Settings;
use lapin::Channel;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};
use lapin::types::AMQPValue;
use serde::Serialize;

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
    pub(super) fn read(position: usize, m: &BasicGetMessage) -> Self {
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
pub(super) async fn ready(conn: &lapin::Connection, queue: &str) -> Result<u32, BrokerError> {
    Ok(broker::queue_counts(conn, queue)
        .await?
        .map_or(0, |(ready, _)| ready))
}

/// Puts a dead letter back at the DLQ's tail: a confirmed copy through the DLQ's fanout
/// exchange (so its routing key stays), then the original is acknowledged.
pub(super) async fn to_tail(
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

pub(super) async fn ack(m: &BasicGetMessage) -> Result<(), BrokerError> {
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

pub(super) async fn get(ch: &Channel, queue: &str) -> Result<Option<BasicGetMessage>, BrokerError> {
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
