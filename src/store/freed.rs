//! `free_email`: a deactivated row of another auth user gives up the email a user of the
//! batch claims, before that user's row is written.

use super::statements::email;
use super::target_table::TargetTableSql;
use crate::decide::UserRow;
use sqlx::{PgConnection, Row};
use std::borrow::Cow;
use uuid::Uuid;

/// A deactivated row whose email went to its tombstone.
pub(super) struct Freed {
    pub user: Uuid,
    /// The auth user who claimed the email.
    pub claimer: Uuid,
    /// The email the row held, for its trail.
    pub email: Option<String>,
}

/// With the target table's `free_email`: gives the tombstone to deactivated rows of other
/// auth users holding an email of the batch.
pub(super) async fn free_emails(
    tx: &mut PgConnection,
    rows: &[(Uuid, UserRow)],
    target_table: Option<&TargetTableSql>,
) -> Result<Vec<Freed>, sqlx::Error> {
    let Some((sql, pattern)) = target_table.and_then(|m| m.free_email.as_ref()) else {
        return Ok(Vec::new());
    };
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let emails: Vec<Cow<str>> = rows.iter().map(|r| email(&r.1, target_table)).collect();
    let freed = sqlx::query(sql)
        .bind(&ids)
        .bind(&emails)
        .bind(pattern)
        .fetch_all(&mut *tx)
        .await?;
    Ok(freed
        .iter()
        .map(|r| Freed {
            user: r.get(0),
            claimer: r.get(1),
            email: r.get(2),
        })
        .collect())
}
