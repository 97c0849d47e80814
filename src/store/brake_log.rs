//! The brake's log (see `brake`): written when the brake engages or is released, read by
//! every replica so that one operator command releases them all; and the brake's window,
//! shared by every replica on the queue.

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

    /// Admits up to `want` deactivations into the window of the last `span`, whatever
    /// replica asks: returns how many fit under `limit` and records them. The table lock
    /// (held for one short transaction) makes two replicas' admissions take turns, so
    /// together they never pass the threshold.
    pub async fn brake_admit(
        &self,
        limit: u32,
        span: std::time::Duration,
        want: usize,
    ) -> Result<usize, sqlx::Error> {
        let mut tx = self.pool().begin().await?;
        // A replica stuck while holding the lock (a partition, a frozen node) must not stall
        // the queue: after a few seconds this batch's deactivations are held instead (the
        // brake engages and says so), creates and updates flow on.
        sqlx::query("SET LOCAL lock_timeout = '5s'")
            .execute(&mut *tx)
            .await?;
        let locked = sqlx::query("LOCK TABLE brake_window IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await;
        if let Err(e) = locked {
            if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("55P03") {
                tracing::warn!(
                    "the brake window stayed locked by another session for 5 s; holding this batch's deactivations"
                );
                return Ok(0);
            }
            return Err(e);
        }
        // Another replica on the queue engaged the brake (its entry is the newest): this
        // one holds too, as a single replica would, until `brake release`.
        let engaged: Option<bool> =
            sqlx::query_scalar("SELECT action = 'engaged' FROM brake_log ORDER BY id DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        if engaged == Some(true) {
            tx.commit().await?;
            return Ok(0);
        }
        let span = span.as_secs_f64();
        sqlx::query("DELETE FROM brake_window WHERE at < now() - make_interval(secs => $1)")
            .bind(span)
            .execute(&mut *tx)
            .await?;
        let used: i64 = sqlx::query_scalar("SELECT coalesce(sum(n), 0)::int8 FROM brake_window")
            .fetch_one(&mut *tx)
            .await?;
        let room = (i64::from(limit) - used).max(0) as usize;
        let granted = want.min(room);
        if granted > 0 {
            sqlx::query("INSERT INTO brake_window (n) VALUES ($1)")
                .bind(granted as i32)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(granted)
    }

    /// How many deactivations the shared window has room for now, without taking any: none
    /// while the brake is engaged. For a command that checks before it changes anything.
    pub async fn brake_room(
        &self,
        limit: u32,
        span: std::time::Duration,
    ) -> Result<usize, sqlx::Error> {
        let (engaged, used): (Option<bool>, i64) = sqlx::query_as(
            "SELECT (SELECT action = 'engaged' FROM brake_log ORDER BY id DESC LIMIT 1), \
                    (SELECT coalesce(sum(n), 0)::int8 FROM brake_window \
                      WHERE at >= now() - make_interval(secs => $1))",
        )
        .bind(span.as_secs_f64())
        .fetch_one(self.pool())
        .await?;
        if engaged == Some(true) {
            return Ok(0);
        }
        Ok((i64::from(limit) - used).max(0) as usize)
    }

    /// Counts `n` deactivations an operator's command applied in the shared window, room or
    /// not (the command checked, or was told to go ahead): the workers' brake sees them.
    pub async fn brake_count(&self, n: usize) -> Result<(), sqlx::Error> {
        if n == 0 {
            return Ok(());
        }
        sqlx::query("INSERT INTO brake_window (n) VALUES ($1)")
            .bind(i32::try_from(n).unwrap_or(i32::MAX))
            .execute(self.pool())
            .await
            .map(|_| ())
    }

    /// Records a release; `token` is the one the released deactivations carry, if any.
    /// The window starts afresh: the operator has looked at what was held.
    pub async fn brake_released(
        &self,
        detail: &str,
        token: Option<&str>,
    ) -> Result<i64, sqlx::Error> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM brake_window")
            .execute(&mut *tx)
            .await?;
        let id = sqlx::query_scalar(
            "INSERT INTO brake_log (action, detail, token) VALUES ('released', $1, $2) \
             RETURNING id",
        )
        .bind(detail)
        .bind(token)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
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
