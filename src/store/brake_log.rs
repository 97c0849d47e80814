//! The brake's log (see `brake`): written when the brake engages or is released, read by
//! every replica so that one operator command releases them all.

use super::Store;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrakeEntry {
    pub id: i64,
    pub engaged: bool,
    pub threshold: Option<i64>,
}

impl Store {
    pub async fn brake_engaged(&self, threshold: u32, detail: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "INSERT INTO brake_log (action, threshold, detail) VALUES ('engaged', $1, $2) \
             RETURNING id",
        )
        .bind(i64::from(threshold))
        .bind(detail)
        .fetch_one(self.pool())
        .await
    }

    /// Records a release; `token` is the one the released deactivations carry, if any.
    pub async fn brake_released(
        &self,
        detail: &str,
        token: Option<&str>,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "INSERT INTO brake_log (action, detail, token) VALUES ('released', $1, $2) \
             RETURNING id",
        )
        .bind(detail)
        .bind(token)
        .fetch_one(self.pool())
        .await
    }

    /// Those of `tokens` that name a recorded release.
    pub async fn brake_release_tokens(
        &self,
        tokens: &[String],
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT token FROM brake_log WHERE action = 'released' AND token = ANY($1)",
        )
        .bind(tokens)
        .fetch_all(self.pool())
        .await
    }

    /// The newest entry, if the brake ever engaged.
    pub async fn brake_last(&self) -> Result<Option<BrakeEntry>, sqlx::Error> {
        let row =
            sqlx::query("SELECT id, action, threshold FROM brake_log ORDER BY id DESC LIMIT 1")
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|r| BrakeEntry {
            id: r.get(0),
            engaged: r.get::<String, _>(1) == "engaged",
            threshold: r.get(2),
        }))
    }
}
