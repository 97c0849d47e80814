//! The SQL of `import`: which users already have a row, and for `import --full` the auth
//! ids the export holds, kept in a table of their own so that "absent from the export" is
//! one set-based statement, whatever the export's size, and never a set in memory.

use super::Store;
use crate::decide::{EventKey, Planned};
use sqlx::postgres::PgPoolCopyExt;
use std::collections::HashSet;
use std::fmt::Write;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// A table of ids left behind by a crashed run is dropped by the next run after this long.
const LEFTOVER_SECS: i64 = 24 * 3600;
const PREFIX: &str = "export_ids_";

impl Store {
    /// Of `ids`, those with a row in the table this service converges.
    pub async fn with_rows(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, sqlx::Error> {
        let sql = match self.target_table_sql() {
            Some(m) => m.existing.as_str(),
            None => "SELECT auth_user_id FROM users WHERE auth_user_id = ANY($1)",
        };
        let found: Vec<Uuid> = sqlx::query_scalar(sql)
            .bind(ids)
            .fetch_all(self.pool())
            .await?;
        Ok(found.into_iter().collect())
    }

    /// Of the users `planned` deactivates, how many are active now and older than the
    /// record: what applying them would deactivate (at most; a user counts once).
    pub async fn would_deactivate(&self, planned: &[&Planned]) -> Result<u64, sqlx::Error> {
        if planned.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = planned.iter().map(|p| p.user_id).collect();
        let ts: Vec<OffsetDateTime> = planned.iter().map(|p| p.key.timestamp).collect();
        let ranks: Vec<i16> = planned.iter().map(|p| p.key.rank).collect();
        let digests: Vec<i64> = planned.iter().map(|p| p.key.digest).collect();
        let n: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT i.id) \
             FROM UNNEST($1::uuid[], $2::timestamptz[], $3::int2[], $4::int8[]) \
               AS i(id, ts, rank, digest) \
             JOIN user_watermarks w ON w.auth_user_id = i.id \
             WHERE w.status_active \
               AND (w.event_ts, w.event_rank, w.event_digest) < (i.ts, i.rank, i.digest)",
        )
        .bind(&ids)
        .bind(&ts)
        .bind(&ranks)
        .bind(&digests)
        .fetch_one(self.pool())
        .await?;
        Ok(n as u64)
    }
}

/// The auth ids of one full export, with what each record would do.
///
/// An unlogged table per run rather than a temporary one: a temporary table belongs to one
/// server session, and the import's statements go through a pool (and often a pooler) to
/// whichever connection is free. Unlogged: nothing here needs to survive a crash.
pub struct ExportIds {
    store: Store,
    table: String,
}

impl ExportIds {
    /// Creates the run's table, dropping any a crashed run left more than a day ago.
    pub async fn create(store: &Store) -> Result<Self, sqlx::Error> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
             AND starts_with(tablename, $1)",
        )
        .bind(PREFIX)
        .fetch_all(store.pool())
        .await?;
        for old in tables {
            let born = old[PREFIX.len()..]
                .split('_')
                .next()
                .and_then(|t| t.parse().ok());
            if born.is_some_and(|t: i64| t < now - LEFTOVER_SECS) {
                sqlx::query(&format!("DROP TABLE IF EXISTS \"{old}\""))
                    .execute(store.pool())
                    .await?;
            }
        }
        let table = format!("{PREFIX}{now}_{}", Uuid::new_v4().simple());
        sqlx::query(&format!(
            "CREATE UNLOGGED TABLE {table} (auth_user_id uuid NOT NULL, \
             deactivates boolean NOT NULL, ts timestamptz NOT NULL, rank int2 NOT NULL, \
             digest int8 NOT NULL)"
        ))
        .execute(store.pool())
        .await?;
        Ok(Self {
            store: store.clone(),
            table,
        })
    }

    /// Adds a batch of the export's records, and users it lists in records that cannot be
    /// applied (`present`: listed, so not left out, but changing nothing), by COPY.
    pub async fn add(&self, planned: &[Planned], present: &[Uuid]) -> Result<(), sqlx::Error> {
        if planned.is_empty() && present.is_empty() {
            return Ok(());
        }
        let mut rows = String::with_capacity((planned.len() + present.len()) * 96);
        for p in planned {
            let flag = if p.deactivates() { 't' } else { 'f' };
            let (ts, rank, digest) = (micros(p.key.timestamp), p.key.rank, p.key.digest);
            let _ = writeln!(rows, "{}\t{flag}\t{ts}\t{rank}\t{digest}", p.user_id);
        }
        for id in present {
            let _ = writeln!(rows, "{id}\tf\t-infinity\t0\t0");
        }
        let mut copy = self
            .store
            .pool()
            .copy_in_raw(&format!("COPY {} FROM STDIN", self.table))
            .await?;
        copy.send(rows.into_bytes()).await?;
        copy.finish().await?;
        Ok(())
    }

    /// Once every record is in: the index the lookups below use, and fresh statistics.
    pub async fn seal(&self) -> Result<(), sqlx::Error> {
        let t = &self.table;
        sqlx::query(&format!("CREATE INDEX ON {t} (auth_user_id)"))
            .execute(self.store.pool())
            .await?;
        sqlx::query(&format!("ANALYZE {t}"))
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// Users active now whom the import would deactivate: those a record deactivates
    /// (deleted upstream, inactive, no longer for this service), and with `absent` (a full
    /// export) those it leaves out whose status stands on nothing newer. An upper bound: a
    /// user with several records counts if any of them deactivates.
    pub async fn would_deactivate(&self, absent: Option<EventKey>) -> Result<u64, sqlx::Error> {
        let t = &self.table;
        let listed: i64 = sqlx::query_scalar(&format!(
            "SELECT count(DISTINCT s.auth_user_id) FROM {t} s \
             JOIN user_watermarks w USING (auth_user_id) \
             WHERE s.deactivates AND w.status_active \
               AND (w.event_ts, w.event_rank, w.event_digest) < (s.ts, s.rank, s.digest)"
        ))
        .fetch_one(self.store.pool())
        .await?;
        let Some(absent) = absent else {
            return Ok(listed as u64);
        };
        let left_out: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM user_watermarks w WHERE w.status_active \
               AND (w.event_ts, w.event_rank, w.event_digest) < ($1, $2, $3) \
               AND NOT EXISTS (SELECT 1 FROM {t} s WHERE s.auth_user_id = w.auth_user_id)"
        ))
        .bind(absent.timestamp)
        .bind(absent.rank)
        .bind(absent.digest)
        .fetch_one(self.store.pool())
        .await?;
        Ok((listed + left_out) as u64)
    }

    /// The next `limit` active users, by auth id after `after`, that the export leaves out
    /// and whose status stands on nothing newer than `absent`: a page at a time, so the
    /// command's memory does not grow with the table.
    pub async fn absent(
        &self,
        after: Option<Uuid>,
        absent: EventKey,
        limit: usize,
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        // The first page includes the nil id itself; later ones start after the last seen.
        let from = if after.is_some() { ">" } else { ">=" };
        sqlx::query_scalar(&format!(
            "SELECT w.auth_user_id FROM user_watermarks w \
             WHERE w.auth_user_id {from} $1 AND w.status_active \
               AND (w.event_ts, w.event_rank, w.event_digest) < ($2, $3, $4) \
               AND NOT EXISTS (SELECT 1 FROM {} s WHERE s.auth_user_id = w.auth_user_id) \
             ORDER BY w.auth_user_id LIMIT $5",
            self.table
        ))
        .bind(after.unwrap_or(Uuid::nil()))
        .bind(absent.timestamp)
        .bind(absent.rank)
        .bind(absent.digest)
        .bind(limit as i64)
        .fetch_all(self.store.pool())
        .await
    }

    pub async fn drop_table(self) -> Result<(), sqlx::Error> {
        sqlx::query(&format!("DROP TABLE IF EXISTS {}", self.table))
            .execute(self.store.pool())
            .await
            .map(|_| ())
    }
}

/// UTC, cut to the microsecond exactly as sqlx sends a bound `OffsetDateTime` (whole
/// microseconds since 2000, toward zero): text input would round instead, and a key
/// compared with a watermark must be the very value the watermark would hold.
fn micros(t: OffsetDateTime) -> String {
    let pg_epoch = time::macros::datetime!(2000-01-01 0:00 UTC);
    let us = (t - pg_epoch).whole_microseconds() as i64;
    let t = pg_epoch + time::Duration::microseconds(us);
    t.format(&Rfc3339).expect("years 1-9999 format")
}

#[cfg(test)]
mod tests {
    use super::micros;
    use time::macros::datetime;

    #[test]
    fn timestamps_are_cut_to_the_microsecond_in_utc() {
        let t = datetime!(2024-03-01 12:00:00.123456789 +02:00);
        assert_eq!(micros(t), "2024-03-01T10:00:00.123456Z");
        // Before 2000 toward zero is upward, as sqlx sends it.
        let t = datetime!(1999-12-31 23:59:59.000000500 UTC);
        assert_eq!(micros(t), "1999-12-31T23:59:59.000001Z");
    }
}
