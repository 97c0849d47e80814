//! The target-table mode: a backend-shaped table in its own schema, a `[target]` section
//! in a settings file, and the check that the table holds what the model expects.

use crate::modes::Expected;
use sqlx::Row;
use user_sync::store::Store;

const DDL: [&str; 4] = [
    "CREATE SCHEMA app",
    "CREATE TABLE app.accounts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
       auth_user_id uuid, email text NOT NULL, first_name text, last_name text, \
       password text, role text, services text[], active boolean NOT NULL, reason text, \
       last_login timestamptz, joined timestamptz NOT NULL)",
    "CREATE UNIQUE INDEX accounts_auth_user_id_key ON app.accounts (auth_user_id)",
    // What `migrate --print-target-sql` recommends: conflicts and adoption by email.
    "CREATE INDEX accounts_email_lower_idx ON app.accounts (lower(email))",
];

const SECTION: &str = r#"
[target]
table = "app.accounts"
key = "auth_user_id"
[target.columns]
email = "email"
first_name = "first_name"
last_name = "last_name"
password = "password_hash"
role = "role"
services = "allowed_services"
joined = "now_on_insert"
[target.deactivation]
flag = "active"
reason = "reason"
"#;

/// Creates the table and writes the settings file; returns its path.
pub(crate) async fn prepare(store: &Store, tag: &str) -> String {
    for sql in DDL {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    let path = std::env::temp_dir().join(format!("{tag}.toml"));
    std::fs::write(&path, SECTION).unwrap();
    path.display().to_string()
}

/// Every expected row is in the table with its fields and status, and nothing else is.
pub(crate) async fn matches(store: &Store, expected: &Expected) -> bool {
    let Ok(rows) = sqlx::query(
        "SELECT auth_user_id, email, first_name, last_name, password, role, services, active, \
         reason FROM app.accounts",
    )
    .fetch_all(store.pool())
    .await
    else {
        return false;
    };
    let want = expected.values().filter(|s| s.row.is_some()).count();
    rows.len() == want
        && rows.iter().all(|r| {
            let Some(row) = expected.get(&r.get(0)).and_then(|s| s.row.as_ref()) else {
                return false;
            };
            let reason: Option<String> = r.get(8);
            r.get::<String, _>(1) == row.email
                && r.get::<Option<String>, _>(2) == row.first_name
                && r.get::<Option<String>, _>(3) == row.last_name
                && r.get::<Option<String>, _>(4).as_deref()
                    == row.password_hash.as_ref().map(|h| h.as_str())
                && r.get::<Option<String>, _>(5) == row.role
                && r.get::<Option<Vec<String>>, _>(6).unwrap_or_default() == row.allowed_services
                && r.get::<bool, _>(7) == row.is_active
                && reason.as_deref() == row.deactivation_reason.map(|d| d.as_str())
        })
}
