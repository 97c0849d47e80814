//! A user's trail read back for `explain`: the lines of `audit_trail` with their reasons
//! derived again, and those the release before wrote into `audit_log` during a rollout.

use super::Store;
use super::audit::field_names;
use crate::decide::trail_code;
use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;
use uuid::Uuid;

/// One line of a user's trail, as `explain` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrailEntry {
    pub event_id: Option<String>,
    pub event_type: String,
    #[serde(with = "time::serde::rfc3339")]
    pub event_ts: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub decision: String,
    pub reason: Option<String>,
    pub changed: Vec<String>,
}

/// Two tables' lines, each newest first, as one list newest first by `received_at`; on
/// a tie the line of `new` (this release's table) comes first. At most `limit` lines.
pub(crate) fn merge(new: Vec<TrailEntry>, old: Vec<TrailEntry>, limit: usize) -> Vec<TrailEntry> {
    let mut out = Vec::with_capacity(limit.min(new.len() + old.len()));
    let (mut new, mut old) = (new.into_iter().peekable(), old.into_iter().peekable());
    while out.len() < limit {
        let take_new = match (new.peek(), old.peek()) {
            (Some(n), Some(o)) => n.received_at >= o.received_at,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.extend(if take_new { new.next() } else { old.next() });
    }
    out
}

/// A line of `audit_trail`, its words derived from its code for `service`.
fn compact_line(r: &PgRow, service: &str) -> TrailEntry {
    let event_id: Option<Uuid> = r.get("event_id");
    let shown = trail_code::shown(
        r.get("code"),
        r.get("event_type_text"),
        r.get("reason"),
        r.get("about_ts"),
        service,
    );
    TrailEntry {
        event_id: event_id.map(|u| u.to_string()).or(r.get("event_key")),
        event_type: shown.event_type,
        event_ts: r.get("event_ts"),
        received_at: r.get("received_at"),
        decision: shown.decision,
        reason: shown.reason,
        changed: field_names(r.get("changed")),
    }
}

/// A line the release before wrote into `audit_log`, as it wrote it.
fn old_line(r: &PgRow) -> TrailEntry {
    TrailEntry {
        event_id: r.get("event_id"),
        event_type: r.get("event_type"),
        event_ts: r.get("event_ts"),
        received_at: r.get("received_at"),
        decision: r.get("decision"),
        reason: r.get("reason"),
        changed: field_names(r.get("changed")),
    }
}

/// No `audit_trail` yet: the schema is the release before's, which `explain` (it never
/// migrates) may read before the upgrade's migration ran. Its lines are all in `audit_log`.
fn before_0008(e: sqlx::Error) -> Result<Vec<PgRow>, sqlx::Error> {
    let undefined_table = e
        .as_database_error()
        .is_some_and(|db| db.code().as_deref() == Some("42P01"));
    if undefined_table { Ok(vec![]) } else { Err(e) }
}

impl Store {
    /// A user's trail, newest first: both tables' lines, merged by when they were received.
    pub async fn trail(&self, user: Uuid, limit: i64) -> Result<Vec<TrailEntry>, sqlx::Error> {
        let new = sqlx::query(
            "SELECT received_at, event_ts, event_id, code, changed, about_ts, event_key, \
               event_type_text, reason \
             FROM audit_trail WHERE auth_user_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(user)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .or_else(before_0008)?;
        let old = sqlx::query(
            "SELECT event_id, event_type, event_ts, received_at, decision, reason, changed \
             FROM audit_log WHERE auth_user_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(user)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let new = new.iter().map(|r| compact_line(r, &self.service)).collect();
        Ok(merge(
            new,
            old.iter().map(old_line).collect(),
            limit.max(0) as usize,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn line(tag: &str, received_s: i64) -> TrailEntry {
        TrailEntry {
            event_id: Some(tag.into()),
            event_type: "user.updated".into(),
            event_ts: OffsetDateTime::UNIX_EPOCH,
            received_at: OffsetDateTime::UNIX_EPOCH + Duration::seconds(received_s),
            decision: "applied".into(),
            reason: None,
            changed: vec![],
        }
    }

    fn tags(lines: &[TrailEntry]) -> Vec<&str> {
        lines
            .iter()
            .map(|l| l.event_id.as_deref().unwrap())
            .collect()
    }

    /// Lines of both tables interleave newest first by when they were received.
    #[test]
    fn lines_of_both_tables_interleave_newest_first() {
        let new = vec![line("n3", 30), line("n1", 10)];
        let old = vec![line("o4", 40), line("o2", 20), line("o0", 0)];
        assert_eq!(tags(&merge(new, old, 10)), ["o4", "n3", "o2", "n1", "o0"]);
    }

    /// On equal receipt times the new table's line comes first, and each table keeps its
    /// own order (by id), whatever its times say.
    #[test]
    fn ties_go_to_the_new_table_and_each_table_keeps_its_order() {
        let new = vec![line("n2", 5), line("n1", 5)];
        let old = vec![line("o2", 5), line("o1", 5)];
        assert_eq!(tags(&merge(new, old, 10)), ["n2", "n1", "o2", "o1"]);
        let skewed = vec![line("n2", 1), line("n1", 9)];
        assert_eq!(
            tags(&merge(skewed, vec![line("o", 5)], 10)),
            ["o", "n2", "n1"]
        );
    }

    /// At most `limit` lines, the newest; an empty side gives the other as it is.
    #[test]
    fn the_limit_keeps_the_newest() {
        let new = vec![line("n3", 30), line("n1", 10)];
        let old = vec![line("o2", 20)];
        assert_eq!(tags(&merge(new.clone(), old, 2)), ["n3", "o2"]);
        assert_eq!(tags(&merge(new.clone(), vec![], 10)), ["n3", "n1"]);
        assert_eq!(tags(&merge(vec![], new, 10)), ["n3", "n1"]);
        assert!(merge(vec![], vec![], 0).is_empty());
    }
}
