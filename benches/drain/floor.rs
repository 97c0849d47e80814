//! The floor under user-sync's Postgres CPU: what writing the rows alone costs. Each batch
//! of the stream (`BATCH_SIZE` events, in order) reduced to the rows it ends with, and
//! those rows written by one bare `INSERT ... SELECT FROM UNNEST ... ON CONFLICT DO
//! UPDATE` in a transaction of its own, into the same `users` table: no watermark guard,
//! no adoption or conflict check, no trail, one statement per batch. The floor is
//! lower still: the whole stream reduced to each user's final row, written once.

use crate::measure::SystemCpu;
use crate::modes::{Events, Row};
use crate::setup::{admin, cleanup, expected_for, settings, tag};
use std::time::Instant;
use user_sync::decide::UserRow;
use user_sync::store::Store;

const BARE_UPSERT: &str = "INSERT INTO users AS u (auth_user_id, email, first_name, \
     last_name, password_hash, role, allowed_services, is_active, deactivation_reason, \
     source_updated_at) \
   SELECT i.id, i.email, i.first, i.last, i.hash, i.role, i.services::text[], i.active, \
     i.reason, i.ts \
   FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
               $7::text[], $8::bool[], $9::text[], $10::timestamptz[]) \
     AS i(id, email, first, last, hash, role, services, active, reason, ts) \
   ON CONFLICT (auth_user_id) DO UPDATE SET email = EXCLUDED.email, \
     first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, \
     password_hash = EXCLUDED.password_hash, role = EXCLUDED.role, \
     allowed_services = EXCLUDED.allowed_services, is_active = EXCLUDED.is_active, \
     deactivation_reason = EXCLUDED.deactivation_reason, \
     source_updated_at = EXCLUDED.source_updated_at, updated_at = now()";

fn batch_rows(events: &Events) -> Vec<(uuid::Uuid, UserRow)> {
    expected_for(events)
        .into_iter()
        .filter_map(|(id, state)| state.row.map(|row| (id, row)))
        .collect()
}

/// Each `batch`-event batch's final rows, one statement per batch.
pub(crate) async fn bare_upsert_floor(events: &Events, batch: usize) -> Row {
    let statements: Vec<_> = events.chunks(batch).map(batch_rows).collect();
    let mode = format!("floor: one bare upsert of each {batch}-event batch's final rows");
    floor(mode, events.len(), &statements).await
}

/// The floor: each user's final row once, `per` rows per statement.
pub(crate) async fn once_per_user_floor(events: &Events, per: usize) -> Row {
    let rows = batch_rows(events);
    let statements: Vec<_> = rows.chunks(per).map(<[_]>::to_vec).collect();
    let mode = format!("floor: each user's final row once, {per} per bare upsert");
    floor(mode, events.len(), &statements).await
}

/// Writes `statements` (one bare upsert each, autocommitted) into a fresh database's
/// `users` from one connection; the row for `events` events.
async fn floor(mode: String, events: usize, statements: &[Vec<(uuid::Uuid, UserRow)>]) -> Row {
    let tag = tag();
    admin(&format!("CREATE DATABASE {tag}")).await;
    let (s, _) = settings(&tag, &tag, &[]);
    let store = Store::new(&s).unwrap();
    store.migrate().await.unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    let mark = crate::wal::mark().await;
    let cpu_before = SystemCpu::now();
    let started = Instant::now();
    for rows in statements {
        upsert(&mut conn, rows).await;
    }
    let secs = started.elapsed().as_secs_f64();
    // Closed first: a backend sends its WAL record counts when it exits (the bytes are
    // exact either way).
    drop(conn);
    store.pool().close().await;
    let system = SystemCpu::now().since(cpu_before);
    let wal = crate::wal::since(&mark).await;
    cleanup(&s, &tag).await;
    Row {
        mode,
        events,
        secs,
        rss_mib: None,
        verified: None,
        cpu: (0.0, system.broker, system.db),
        range: None,
        wal: Some(wal),
    }
}

async fn upsert(conn: &mut sqlx::PgConnection, rows: &[(uuid::Uuid, UserRow)]) {
    let col = |f: fn(&UserRow) -> Option<String>| -> Vec<Option<String>> {
        rows.iter().map(|(_, r)| f(r)).collect()
    };
    sqlx::query(BARE_UPSERT)
        .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(col(|r| Some(r.email.clone())))
        .bind(col(|r| r.first_name.clone()))
        .bind(col(|r| r.last_name.clone()))
        .bind(col(|r| r.password_hash.as_ref().map(|h| h.as_str().into())))
        .bind(col(|r| r.role.clone()))
        .bind(col(|r| {
            Some(format!("{{{}}}", r.allowed_services.join(",")))
        }))
        .bind(rows.iter().map(|r| r.1.is_active).collect::<Vec<_>>())
        .bind(col(|r| r.deactivation_reason.map(|d| d.as_str().into())))
        .bind(
            rows.iter()
                .map(|r| r.1.source_updated_at)
                .collect::<Vec<_>>(),
        )
        .execute(conn)
        .await
        .unwrap();
}
