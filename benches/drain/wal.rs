//! What a mode costs the database where it is paid: the WAL it writes (replayed by every
//! replica, archived by every backup). Read from the benchmark's server after a
//! `CHECKPOINT`, so every mode starts with the same full-page writes ahead of it; the
//! server's WAL is shared by everything on it, so a server of the benchmark's own
//! (`DRAIN_PG`) gives figures nobody else's work is in.

use sqlx::{Connection, PgConnection, Row};

/// Where the server's WAL stood when a mode started.
pub(crate) struct WalMark {
    lsn: String,
    records: i64,
    fpi: i64,
}

/// The WAL written since a mark: bytes, records and full-page images.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wal {
    pub bytes: f64,
    pub records: i64,
    pub fpi: i64,
    /// The LSN range, for `pg_waldump --stats=record --start FROM --end TO`.
    pub range: (String, String),
}

async fn admin() -> PgConnection {
    let url = format!("{}/postgres", crate::setup::pg());
    PgConnection::connect(&url).await.unwrap()
}

const READ: &str = "SELECT pg_current_wal_lsn()::text, wal_records, wal_fpi FROM pg_stat_wal";

/// Checkpoints, then marks where the WAL stands.
pub(crate) async fn mark() -> WalMark {
    let mut c = admin().await;
    sqlx::query("CHECKPOINT").execute(&mut c).await.unwrap();
    let _ = c.close().await;
    mark_here().await
}

/// Marks where the WAL stands, without a checkpoint: for the parts of a longer run, whose
/// checkpoints come as they would on a server in service.
pub(crate) async fn mark_here() -> WalMark {
    let mut c = admin().await;
    let r = sqlx::query(READ).fetch_one(&mut c).await.unwrap();
    let _ = c.close().await;
    WalMark {
        lsn: r.get(0),
        records: r.get(1),
        fpi: r.get(2),
    }
}

/// The WAL written since `m`.
pub(crate) async fn since(m: &WalMark) -> Wal {
    let mut c = admin().await;
    let r = sqlx::query(READ).fetch_one(&mut c).await.unwrap();
    let to: String = r.get(0);
    let bytes: f64 = sqlx::query_scalar("SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::float8")
        .bind(&to)
        .bind(&m.lsn)
        .fetch_one(&mut c)
        .await
        .unwrap();
    let _ = c.close().await;
    Wal {
        bytes,
        records: r.get::<i64, _>(1) - m.records,
        fpi: r.get::<i64, _>(2) - m.fpi,
        range: (m.lsn.clone(), to),
    }
}
