//! Reads for `user-sync explain`: find a user by email, auth id or local id, and what the
//! table and the watermarks hold for them.

use super::Store;
use serde::Serialize;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

/// The user's row, without the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowView {
    /// The own table's local id; a target table's rows are named by their auth id.
    pub id: Option<i64>,
    pub email: Option<String>,
    pub role: Option<String>,
    pub allowed_services: Vec<String>,
    pub is_active: bool,
    pub deactivation_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub source_updated_at: Option<OffsetDateTime>,
}

/// The events the user's status and fields stand on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatermarkView {
    #[serde(with = "time::serde::rfc3339")]
    pub status_event_ts: OffsetDateTime,
    pub status_event_type: &'static str,
    pub status_active: bool,
    pub status_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub fields_event_ts: Option<OffsetDateTime>,
}

fn kind(rank: i16) -> &'static str {
    match rank {
        0 => "user.created",
        1 => "user.updated",
        _ => "user.deleted",
    }
}

impl Store {
    /// The auth ids a query names: itself if it is a UUID, the row's if it is a local id,
    /// every row's with that email (case-insensitive) otherwise.
    pub async fn find_users(&self, query: &str) -> Result<Vec<Uuid>, sqlx::Error> {
        if let Ok(id) = query.parse::<Uuid>() {
            return Ok(vec![id]);
        }
        if let Some(reads) = &self.reads {
            let rows = sqlx::query(&reads.find_by_email)
                .bind(query)
                .fetch_all(self.pool())
                .await?;
            return Ok(rows.iter().map(|r| r.get(0)).collect());
        }
        let rows = if let Ok(local) = query.parse::<i64>() {
            sqlx::query("SELECT auth_user_id FROM users WHERE id = $1 AND auth_user_id IS NOT NULL")
                .bind(local)
                .fetch_all(self.pool())
                .await?
        } else {
            sqlx::query(
                "SELECT auth_user_id FROM users WHERE lower(email) = lower($1) \
                 AND auth_user_id IS NOT NULL ORDER BY is_active DESC, id",
            )
            .bind(query)
            .fetch_all(self.pool())
            .await?
        };
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub async fn row_view(&self, user: Uuid) -> Result<Option<RowView>, sqlx::Error> {
        let own = "SELECT id, email, role, allowed_services, is_active, deactivation_reason, \
                   source_updated_at FROM users WHERE auth_user_id = $1";
        let sql = self.reads.as_ref().map_or(own, |r| r.row_view.as_str());
        let r = sqlx::query(sql)
            .bind(user)
            .fetch_optional(self.pool())
            .await?;
        Ok(r.map(|r| RowView {
            id: r.get(0),
            email: r.get(1),
            role: r.get(2),
            allowed_services: r.get(3),
            is_active: r.get(4),
            deactivation_reason: r.get(5),
            source_updated_at: r.get(6),
        }))
    }

    pub async fn watermark_view(&self, user: Uuid) -> Result<Option<WatermarkView>, sqlx::Error> {
        let r = sqlx::query(
            "SELECT event_ts, event_rank, status_active, status_reason, data_ts \
             FROM user_watermarks WHERE auth_user_id = $1",
        )
        .bind(user)
        .fetch_optional(self.pool())
        .await?;
        Ok(r.map(|r| WatermarkView {
            status_event_ts: r.get(0),
            status_event_type: kind(r.get(1)),
            status_active: r.get(2),
            status_reason: r.get(3),
            fields_event_ts: r.get(4),
        }))
    }
}
