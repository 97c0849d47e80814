//! The convergence rule on ASP.NET Identity's table, whose deactivation is `LockoutEnd`
//! set to `timestamp_value`, with upper-cased normalized columns and insert-only ones.

use super::convergence::{HISTORY, two_replicas_converge};
use crate::support::*;

/// (Email, NormalizedEmail, NormalizedUserName, FirstName, LastName, active) of a row.
type IdentityRow = (String, String, String, Option<String>, Option<String>, bool);

/// Two replicas on Identity's table, fed a shuffled history with duplicates, end in the
/// model: an active user has no `LockoutEnd`, a deactivated one has it; the normalized
/// columns are the email upper-cased; the legacy row is adopted and keeps its own `Id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_two_replicas_converge_to_the_model() {
    let sql = r#"SELECT "Email"::text, "NormalizedEmail"::text, "NormalizedUserName"::text,
                        "FirstName", "LastName", "LockoutEnd" IS NULL, auth_user_id
                 FROM "AspNetUsers" WHERE auth_user_id IS NOT NULL"#;
    let run = two_replicas_converge(&IDENTITY, arb_event(HISTORY), sql, |row| -> IdentityRow {
        let upper = row.email.to_uppercase();
        (
            row.email,
            upper.clone(),
            upper,
            row.first_name,
            row.last_name,
            row.is_active,
        )
    })
    .await;
    let db = &run.db;
    if run.expected.contains_key(&uid(1)) {
        let id: String =
            sqlx::query_scalar(r#"SELECT "Id" FROM "AspNetUsers" WHERE auth_user_id = $1"#)
                .bind(uid(1))
                .fetch_one(db)
                .await
                .unwrap();
        assert_eq!(
            id, "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
            "adopted, own Id kept"
        );
    }
    run.stop().await;
}
