//! What the table must hold after each run, worked out from the export file itself (not
//! from the generator's formulas) with the service's own membership rule, and the check.

use crate::run::db_url;
use serde::Deserialize;
use sqlx::{Connection as _, PgConnection};
use std::io::BufRead;
use std::path::Path;
use user_sync::membership::Membership;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Rows in `users`: the records for this service (others get no row).
    pub rows: i64,
    pub active: i64,
    /// Rows deactivated as `absent_from_export`.
    pub absent: i64,
}

#[derive(Deserialize)]
struct Record {
    role: Option<String>,
    is_active: bool,
    allowed_services_json: String,
}

/// For an export of `first + extra` users (`file`): the counts after importing its first
/// `first` users into an empty table, and after reconciling a table holding all of them
/// with an export of the first `first` only.
pub(crate) fn expected(file: &Path, first: u64, membership: &Membership) -> (Counts, Counts) {
    let reader = std::io::BufReader::new(std::fs::File::open(file).expect("the export"));
    let (mut head, mut tail) = ([0i64; 2], [0i64; 2]);
    for (i, line) in reader.lines().enumerate() {
        let r: Record = serde_json::from_str(&line.expect("a line")).expect("a record");
        let services: Vec<String> = serde_json::from_str(&r.allowed_services_json).unwrap();
        let belongs = membership.belongs(r.role.as_deref(), &services);
        let counts = if (i as u64) < first {
            &mut head
        } else {
            &mut tail
        };
        counts[0] += i64::from(belongs);
        counts[1] += i64::from(belongs && r.is_active);
    }
    let import = Counts {
        rows: head[0],
        active: head[1],
        absent: 0,
    };
    let reconcile = Counts {
        rows: head[0] + tail[0],
        active: head[1],
        absent: tail[1],
    };
    (import, reconcile)
}

/// The table's counts in `db`, and whether an export id table was left behind.
pub(crate) async fn actual(db: &str) -> Result<(Counts, i64), String> {
    let mut c = PgConnection::connect(&db_url(db))
        .await
        .map_err(|e| e.to_string())?;
    let (rows, active, absent): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE is_active), \
         count(*) FILTER (WHERE deactivation_reason = 'absent_from_export') FROM user_sync.users",
    )
    .fetch_one(&mut c)
    .await
    .map_err(|e| e.to_string())?;
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'export\\_ids\\_%'",
    )
    .fetch_one(&mut c)
    .await
    .map_err(|e| e.to_string())?;
    let _ = c.close().await;
    Ok((
        Counts {
            rows,
            active,
            absent,
        },
        left,
    ))
}

/// Fails unless `db` holds exactly `want` (and no export id table).
pub(crate) async fn check(what: &str, db: &str, want: Counts) -> Result<(), String> {
    let (got, left) = actual(db).await?;
    if got != want || left != 0 {
        return Err(format!(
            "{what}: the table is wrong: expected {want:?}, found {got:?}, export id tables left: {left}"
        ));
    }
    Ok(())
}
