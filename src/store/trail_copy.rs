//! The trail's lines as one `COPY ... FROM STDIN (FORMAT binary)` stream. A COPY inserts
//! its rows in groups, each group one WAL record with a few bytes per row, where an INSERT
//! writes a whole record (its header and block reference) per row: on the trail, written
//! once per event, that is most of the heap's WAL (BENCHMARKS.md, "The trail's index and its write").
//! Binary, not text: no escaping of the free-text columns and no date parsing, and
//! timestamps keep exactly the microseconds an INSERT would bind.
//! Where row-level security applies to `audit_trail`, Postgres refuses COPY FROM (0A000):
//! there the same lines go by one INSERT (`Via`).

use sqlx::PgConnection;
use std::sync::atomic::{AtomicU8, Ordering};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

/// The statement the stream is for; its columns in the order `binary` writes them.
pub(super) const COPY_SQL: &str = "COPY audit_trail (received_at, event_ts, auth_user_id, \
     event_id, code, changed, about_ts, event_key, event_type_text, reason) \
     FROM STDIN (FORMAT binary)";

/// One line's columns, as `audit_trail` stores them.
pub(super) struct Line<'a> {
    pub received_at: OffsetDateTime,
    pub event_ts: OffsetDateTime,
    pub user: Uuid,
    pub event_id: Option<Uuid>,
    pub code: i16,
    pub changed: i16,
    pub about: Option<OffsetDateTime>,
    pub event_key: Option<&'a str>,
    pub event_type_text: Option<&'a str>,
    pub reason: Option<&'a str>,
}

/// How the trail is written: asked once (row-level security on `audit_trail` for this
/// role), and switched to INSERT when a COPY is refused for it later.
#[derive(Default)]
pub(super) struct Via(AtomicU8);

const UNKNOWN: u8 = 0;
const COPY: u8 = 1;
const INSERT: u8 = 2;

impl Via {
    /// Whether to COPY, asking the database the first time.
    pub(super) async fn copy(&self, conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
        if self.0.load(Ordering::Relaxed) == UNKNOWN {
            let rls: bool = sqlx::query_scalar("SELECT row_security_active('audit_trail')")
                .fetch_one(&mut *conn)
                .await?;
            self.0
                .store(if rls { INSERT } else { COPY }, Ordering::Relaxed);
        }
        Ok(self.0.load(Ordering::Relaxed) == COPY)
    }

    /// Whether `e` is a COPY refused for row-level security (enabled while running): then
    /// INSERT from now on.
    pub(super) fn refused(&self, e: &sqlx::Error) -> bool {
        let rls = e.as_database_error().and_then(|d| d.code()).as_deref() == Some("0A000");
        if rls {
            self.0.store(INSERT, Ordering::Relaxed);
        }
        rls
    }
}

/// The lines by one INSERT, for a table COPY may not write.
pub(super) async fn insert(conn: &mut PgConnection, lines: &[Line<'_>]) -> Result<(), sqlx::Error> {
    let col = |f: fn(&Line) -> OffsetDateTime| lines.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO audit_trail (received_at, event_ts, auth_user_id, event_id, code, changed, \
           about_ts, event_key, event_type_text, reason) \
         SELECT * FROM UNNEST($1::timestamptz[], $2::timestamptz[], $3::uuid[], $4::uuid[], \
                              $5::int2[], $6::int2[], $7::timestamptz[], $8::text[], \
                              $9::text[], $10::text[])",
    )
    .bind(col(|l| l.received_at))
    .bind(col(|l| l.event_ts))
    .bind(lines.iter().map(|l| l.user).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.event_id).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.code).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.changed).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.about).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.event_key).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.event_type_text).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.reason).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Postgres counts timestamps in microseconds from here.
const PG_EPOCH: OffsetDateTime = datetime!(2000-01-01 0:00 UTC);

/// The whole stream: header, one tuple per line, trailer.
pub(super) fn binary(lines: &[Line<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNATURE.len() + 10 + lines.len() * 110);
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
    out.extend_from_slice(&0i32.to_be_bytes()); // no header extension
    for line in lines {
        out.extend_from_slice(&10i16.to_be_bytes());
        let ts = |t: OffsetDateTime| micros(t).to_be_bytes();
        field(&mut out, Some(&ts(line.received_at)));
        field(&mut out, Some(&ts(line.event_ts)));
        field(&mut out, Some(line.user.as_bytes()));
        field(&mut out, line.event_id.as_ref().map(|u| &u.as_bytes()[..]));
        field(&mut out, Some(&line.code.to_be_bytes()));
        field(&mut out, Some(&line.changed.to_be_bytes()));
        field(&mut out, line.about.map(ts).as_ref().map(|b| &b[..]));
        for text in [line.event_key, line.event_type_text, line.reason] {
            field(&mut out, text.map(str::as_bytes));
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// A field: its length and bytes, or -1 for NULL.
fn field(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(bytes) => {
            out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

/// Microseconds since Postgres's epoch, truncated as sqlx truncates a bound timestamp.
fn micros(t: OffsetDateTime) -> i64 {
    (t - PG_EPOCH).whole_microseconds() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>() -> Line<'a> {
        Line {
            received_at: datetime!(2000-01-01 0:00:01 UTC),
            event_ts: datetime!(1999-12-31 23:59:59.5 UTC),
            user: Uuid::from_u128(1),
            event_id: None,
            code: 0x0102,
            changed: -1,
            about: None,
            event_key: None,
            event_type_text: None,
            reason: Some("a \"quoted\",\ttabbed\nline \\ é"),
        }
    }

    #[test]
    fn a_stream_is_signature_flags_tuples_and_trailer() {
        let out = binary(&[]);
        assert_eq!(&out[..11], SIGNATURE);
        assert_eq!(&out[11..19], &[0; 8]);
        assert_eq!(&out[19..], &[0xff, 0xff]);
    }

    #[test]
    fn fields_are_lengths_and_big_endian_values_and_nulls_are_minus_one() {
        let out = binary(&[line()]);
        let t = &out[19..out.len() - 2];
        let mut at = 2;
        let mut next = || {
            let len = i32::from_be_bytes(t[at..at + 4].try_into().unwrap());
            at += 4;
            let bytes = (len >= 0).then(|| t[at..at + len as usize].to_vec());
            at += len.max(0) as usize;
            bytes
        };
        assert_eq!(&t[..2], &10i16.to_be_bytes());
        assert_eq!(next(), Some(1_000_000i64.to_be_bytes().to_vec()));
        assert_eq!(next(), Some((-500_000i64).to_be_bytes().to_vec()));
        assert_eq!(next(), Some(Uuid::from_u128(1).as_bytes().to_vec()));
        assert_eq!(next(), None);
        assert_eq!(next(), Some(vec![0x01, 0x02]));
        assert_eq!(next(), Some(vec![0xff, 0xff]));
        assert_eq!(next(), None);
        assert_eq!(next(), None);
        assert_eq!(next(), None);
        let reason = line().reason.unwrap().as_bytes().to_vec();
        assert_eq!(next(), Some(reason), "text goes as its bytes, unescaped");
        assert_eq!(at, t.len());
    }

    #[test]
    fn sub_microsecond_times_truncate_toward_zero_like_a_bound_timestamp() {
        let t = datetime!(2024-01-01 0:00:00.000_000_999 UTC);
        assert_eq!(micros(t), micros(datetime!(2024-01-01 0:00 UTC)));
        let before = datetime!(1999-12-31 23:59:59.999_999_5 UTC);
        assert_eq!(micros(before), 0);
    }
}
