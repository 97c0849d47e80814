//! Read-only figures for the operator's `status` command.

use super::Store;
use sqlx::Row;
use time::OffsetDateTime;

/// What the table holds: rows by state, and how far the events have got.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserCounts {
    pub active: i64,
    /// Inactive rows by `deactivation_reason` (`none` for rows the backend deactivated).
    pub inactive: Vec<(String, i64)>,
    /// Users with a watermark: every user an event was seen for, with a row or not.
    pub users_seen: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub newest_event: Option<OffsetDateTime>,
}

impl Store {
    pub async fn user_counts(&self) -> Result<UserCounts, sqlx::Error> {
        let own = "SELECT is_active, coalesce(deactivation_reason, 'none'), count(*) \
                   FROM users GROUP BY 1, 2 ORDER BY 1 DESC, 2";
        let rows = sqlx::query(self.reads.as_ref().map_or(own, |r| r.counts.as_str()))
            .fetch_all(self.pool())
            .await?;
        let mut counts = UserCounts {
            active: 0,
            inactive: Vec::new(),
            users_seen: 0,
            newest_event: None,
        };
        for r in rows {
            if r.get::<bool, _>(0) {
                counts.active += r.get::<i64, _>(2);
            } else {
                counts.inactive.push((r.get(1), r.get(2)));
            }
        }
        let marks = sqlx::query("SELECT count(*), max(event_ts) FROM user_watermarks")
            .fetch_one(self.pool())
            .await?;
        counts.users_seen = marks.get(0);
        counts.newest_event = marks.get(1);
        Ok(counts)
    }
}
