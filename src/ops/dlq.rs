//! `user-sync dlq`: look into the dead-letter queue without consuming it, move messages
//! back to the main queue once their cause is fixed, or purge it.
//!
//! Browsing takes messages with `basic.get` and never acknowledges them; closing the
//! channel returns them all to the queue. Replay publishes a copy to the main queue and
//! acknowledges the dead letter only after the broker confirmed the copy, so a replay that
//! dies midway duplicates at most one message (harmless: events are idempotent) and loses none.

use crate::broker::{self, BrokerError, ROUTING_KEY_HEADER, Session, Topology};
use crate::settings::Settings;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Channel};
use serde::Serialize;

/// Headers that describe a failed attempt; a replayed message starts afresh without them.
const ATTEMPT_HEADERS: [&str; 5] = [
    "x-attempts",
    "x-first-failed-at",
    "x-error",
    "x-error-kind",
    "x-death",
];

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
            routing_key: broker::header_str(p, ROUTING_KEY_HEADER)
                .unwrap_or_else(|| m.delivery.routing_key.as_str().to_string()),
            kind: broker::header_str(p, "x-error-kind"),
            error: broker::header_str(p, "x-error"),
            attempts: broker::header_int(p, "x-attempts"),
            first_failed_at: broker::header_str(p, "x-first-failed-at"),
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
    let topo = Topology::new(settings);
    let (conn, ch) = browse_channel(settings).await?;
    let mut out = Vec::new();
    for position in 1..=limit {
        match get(&ch, &topo.dlq).await? {
            Some(m) if keep(&m) => out.push(DeadLetter::read(position, &m)),
            Some(_) => {}
            None => break,
        }
    }
    let _ = ch.close(200, "browsed".into()).await;
    let _ = conn.close(200, "browsed".into()).await;
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
    let topo = Topology::new(settings);
    let (conn, ch) = browse_channel(settings).await?;
    let mut found = None;
    for n in 1..=position {
        match get(&ch, &topo.dlq).await? {
            Some(m) if n == position => {
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
                found = Some(Shown {
                    letter: DeadLetter::read(n, &m),
                    headers,
                    body: redact_body(&m.delivery.data),
                });
            }
            Some(_) => {}
            None => break,
        }
    }
    let _ = ch.close(200, "browsed".into()).await;
    let _ = conn.close(200, "browsed".into()).await;
    Ok(found)
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
    /// Looked at but left in the dead-letter queue (another kind).
    pub kept: usize,
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
    let moved = move_back(&session, &topo, &topo.dlq, kind, limit).await;
    session.close().await;
    moved
}

/// Moves messages from `from` to the main queue: each copy confirmed before its original
/// is acknowledged. Shared by `dlq replay` and `brake release`.
pub(crate) async fn move_back(
    session: &Session,
    topo: &Topology,
    from: &str,
    kind: Option<&str>,
    limit: Option<usize>,
) -> Result<Replayed, BrokerError> {
    let mut done = Replayed {
        replayed: 0,
        kept: 0,
    };
    while limit.is_none_or(|l| done.replayed < l) {
        let Some(m) = get(&session.consume, from).await? else {
            break;
        };
        let letter = DeadLetter::read(0, &m);
        if kind.is_some_and(|k| letter.kind.as_deref() != Some(k)) {
            // Held unacknowledged until the channel closes, so the loop moves past it.
            done.kept += 1;
            continue;
        }
        let props = fresh_properties(&m.delivery.properties, &letter.routing_key);
        // Straight to our queue through the default exchange, as the retry tiers do: the
        // auth exchange would hand the message to every other service again.
        session
            .publish_confirmed("", &topo.queue, &m.delivery.data, props)
            .await?;
        m.delivery.acker.ack(BasicAckOptions::default()).await?;
        done.replayed += 1;
    }
    Ok(done)
}

fn fresh_properties(p: &BasicProperties, routing_key: &str) -> BasicProperties {
    let mut headers = lapin::types::FieldTable::default();
    if let Some(old) = p.headers() {
        for (k, v) in old.inner() {
            if !ATTEMPT_HEADERS.contains(&k.as_str()) {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    headers.insert(ROUTING_KEY_HEADER.into(), broker::text(routing_key));
    p.clone().with_headers(headers).with_delivery_mode(2)
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

/// A body for display: pretty JSON with `password_hash` values masked, or the raw text;
/// either way with anything shaped like a bcrypt hash masked too.
pub fn redact_body(body: &[u8]) -> String {
    fn mask_field(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if k == "password_hash" && !v.is_null() {
                        *v = serde_json::Value::String("***".into());
                    } else {
                        mask_field(v);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(mask_field),
            _ => {}
        }
    }
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut v) => {
            mask_field(&mut v);
            serde_json::to_string_pretty(&v).unwrap_or_default()
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    redact(&text)
}

/// Replaces every bcrypt-shaped substring (`$2a$`/`$2b$`/`$2x$`/`$2y$`, two cost digits,
/// `$`, 53 characters of its alphabet) with `***`, in whatever escaping it is written: a body
/// that is not JSON (or not UTF-8) shows its escapes raw, so `\/`, `\u0024`, `\x24`,
/// doubled backslashes and `%24` spell the same hash.
pub fn redact(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match bcrypt_at(b, i) {
            Some(end) => {
                out.push_str(&text[copied..i]);
                out.push_str("***");
                i = end;
                copied = end;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// Where a bcrypt hash starting at `i` ends, reading escapes as the characters they stand for.
fn bcrypt_at(b: &[u8], mut i: usize) -> Option<usize> {
    let alphabet = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'/';
    for pos in 0..60 {
        let (c, next) = unescaped_at(b, i)?;
        let ok = match pos {
            0 | 3 | 6 => c == b'$',
            1 => c == b'2',
            2 => matches!(c, b'a' | b'b' | b'x' | b'y'),
            4 | 5 => c.is_ascii_digit(),
            _ => alphabet(c),
        };
        if !ok {
            return None;
        }
        i = next;
    }
    Some(i)
}

/// The ASCII character at `i` and where the next one starts: a plain byte, or one written as
/// backslashes and then `/` (or any other character), `uXXXX` or `xXX`, or as `%XX`.
fn unescaped_at(b: &[u8], i: usize) -> Option<(u8, usize)> {
    let hex = |from: usize, len: usize| -> Option<u8> {
        let digits = std::str::from_utf8(b.get(from..from + len)?).ok()?;
        u8::try_from(u32::from_str_radix(digits, 16).ok()?).ok()
    };
    match *b.get(i)? {
        b'\\' => {
            let mut j = i;
            while b.get(j) == Some(&b'\\') {
                j += 1;
            }
            match *b.get(j)? {
                b'u' => Some((hex(j + 1, 4)?, j + 5)),
                b'x' => Some((hex(j + 1, 2)?, j + 3)),
                c => Some((c, j + 1)),
            }
        }
        b'%' => Some((hex(i + 1, 2)?, i + 3)),
        c => Some((c, i + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2b$12$zF7vDVD5e.4xzmEI05ezE.ruqh5Vux7K3MLMbdsBDCmcd.PIs8L/O";

    #[test]
    fn masks_the_hash_field_and_hash_shapes_anywhere() {
        let body = format!(
            r#"{{"user":{{"password_hash":"not-bcrypt","email":"a@example.com"}},"note":"{HASH}"}}"#
        );
        let shown = redact_body(body.as_bytes());
        assert!(
            !shown.contains("not-bcrypt") && !shown.contains(HASH),
            "{shown}"
        );
        assert!(shown.contains("a@example.com"));
        let raw = format!("{{broken json {HASH} tail");
        assert_eq!(redact_body(raw.as_bytes()), "{broken json *** tail");
    }

    #[test]
    fn leaves_text_without_hashes_alone() {
        for s in [
            "",
            "$2b$",
            "plain text",
            "ünïcödé $2b$12$short",
            r"\u0024 \/ %24 \",
            "100% \\",
        ] {
            assert_eq!(redact(s), s);
        }
    }

    #[test]
    fn masks_a_hash_in_any_escaping() {
        let escapings = [
            HASH.replace('/', r"\/"),
            HASH.replace('$', r"\u0024"),
            HASH.replace('$', r"\u0024").replace('/', r"\u002F"),
            HASH.replace('/', r"\\/"),
            HASH.replace('$', r"\\u0024"),
            HASH.replace('$', r"\x24"),
            HASH.replace('$', "%24").replace('/', "%2f"),
            HASH.replace('$', r"\$"),
            "$2y$10$".to_string() + &HASH[7..].replace('/', r"\/"),
        ];
        for escaped in escapings {
            let text = format!("{{not json: \"{escaped}\" tail");
            let shown = redact(&text);
            assert_eq!(shown, "{not json: \"***\" tail", "{escaped}");
        }
        let mut not_utf8 = b"\xff\xfe{\"note\":\"".to_vec();
        not_utf8.extend(HASH.replace('/', r"\/").as_bytes());
        not_utf8.extend(b"\"}");
        let shown = redact_body(&not_utf8);
        assert!(shown.ends_with("{\"note\":\"***\"}"), "{shown}");
    }
}
