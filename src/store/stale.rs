//! Whether an event would change nothing of its user, asked outside a batch: for an event
//! the target table refuses (a computed column too long), which is never applied.

use super::Store;
use crate::decide::Planned;

impl Store {
    /// Whether both the user's status and its fields stand on an event at least as new as
    /// `planned` (the `decide::EventKey` order), so that applying it would be stale. A
    /// user without a watermark, or with no fields recorded yet, is not stale.
    pub async fn would_be_stale(&self, planned: &Planned) -> Result<bool, sqlx::Error> {
        let key = &planned.key;
        let stale: Option<Option<bool>> = sqlx::query_scalar(
            "SELECT (event_ts, event_rank, event_digest) >= ($2, $3, $4) \
                AND (data_ts, data_rank, data_digest) >= ($2, $3, $4) \
             FROM user_watermarks WHERE auth_user_id = $1",
        )
        .bind(planned.user_id)
        .bind(key.timestamp)
        .bind(key.rank)
        .bind(key.digest)
        .fetch_optional(self.pool())
        .await?;
        Ok(stale.flatten().unwrap_or(false))
    }
}
