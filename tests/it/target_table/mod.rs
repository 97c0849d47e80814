//! The `[target]` mapping: syncing into the backend's own users table (Django's
//! `auth_user`, Laravel's `users`, Rails/Devise's `users`, or any table a mapping fits),
//! refusing at start what could never be written, and the DDL it prints for the backend.

mod columns;
mod computed;
mod convergence;
mod convergence_identity;
mod ddl;
mod frameworks;
mod lockout;
mod readme;
mod returning_email;
mod start_check;

use crate::support::*;
use sqlx::{PgPool, Row};
use std::time::Duration;
use user_sync::decide::{self, Planned};
use user_sync::store::{EventResult, Store, target_table_ddl};

const WAIT: Duration = Duration::from_secs(20);

/// An event for `user` with its first name, activity and password hash set.
fn event_for(
    kind: &str,
    user: u8,
    ts: &str,
    role: &str,
    services: &[&str],
    (first_name, active, hash): (&str, bool, &str),
) -> serde_json::Value {
    let mut e = event(kind, user, ts, role, services);
    e["user"]["first_name"] = first_name.into();
    e["user"]["is_active"] = active.into();
    e["user"]["password_hash"] = hash.into();
    e
}

/// A test database holding the backend's `ddl` plus what `target_table_ddl` prints, and a store
/// (migrated) with the mapping; the result of `prepare_target_table` as problem lines.
struct Target {
    _env: Env,
    db: PgPool,
    store: Store,
    prepared: Result<(), Vec<String>>,
}

impl Target {
    async fn new(ddl: &str, toml: &str) -> Self {
        let env = Env::new().await;
        Self::in_env(env, ddl, toml).await
    }

    async fn in_env(env: Env, ddl: &str, toml: &str) -> Self {
        let db = PgPool::connect(&env.db.url()).await.unwrap();
        run_sql(&db, ddl).await;
        let mapping = mapping_of(toml);
        run_sql(&db, &target_table_ddl(&mapping)).await;
        let mut settings = env.settings();
        settings.target_table = Some(mapping);
        let store = Store::new(&settings).unwrap();
        store.migrate().await.unwrap();
        let prepared = store
            .prepare_target_table()
            .await
            .map_err(|p| p.iter().map(ToString::to_string).collect());
        Self {
            _env: env,
            db,
            store,
            prepared,
        }
    }

    /// Applies `events` as one batch; each event's result, in order.
    async fn apply(&self, events: &[serde_json::Value]) -> Vec<EventResult> {
        let planned: Vec<Planned> = events.iter().map(planned).collect();
        let (users, _) = decide::reduce(&planned);
        let mut results = self.store.apply(&planned, &users).await.unwrap();
        results.sort_by_key(|r| r.0);
        results.dedup_by_key(|r| r.0);
        results.into_iter().map(|r| r.1).collect()
    }

    async fn text(&self, sql: &str) -> Option<String> {
        sqlx::query_scalar(sql)
            .bind(uid(1))
            .fetch_optional(&self.db)
            .await
            .unwrap()
    }
}

fn applied(results: &[EventResult]) -> bool {
    results.iter().all(|r| matches!(r, EventResult::Done(_)))
}

/// A `[target]` section for `table`: keyed by `auth_user_id`, the `email` column written
/// from the email and `columns` (TOML lines) besides, deactivation through an `active`
/// flag.
fn flag_mapping(table: &str, columns: &str) -> String {
    format!(
        "[target]\ntable = \"{table}\"\nkey = \"auth_user_id\"\n[target.columns]\n\
         email = \"email\"\n{columns}\n[target.deactivation]\nflag = \"active\"\n"
    )
}

impl Target {
    /// Fails the test unless the start-up check accepted the mapping and user 1's
    /// creation applies.
    async fn creates_user_1(&self) {
        assert_eq!(self.prepared, Ok(()));
        let results = self.apply(&[created(1)]).await;
        assert!(applied(&results), "{results:?}");
    }

    /// Fails the test unless the start-up check refused the mapping (`why`), naming
    /// `column` in a problem.
    fn refused_naming(&self, column: &str, why: &str) {
        let problems = self.prepared.clone().expect_err(why);
        assert!(problems.iter().any(|p| p.contains(column)), "{problems:?}");
    }
}

impl Framework {
    /// User `user`'s row: (id, email, first name, stored password, active, backend
    /// column, extra).
    async fn row(&self, db: &PgPool, user: u8) -> Option<TargetRow> {
        let sql = format!(
            "SELECT ({})::text, {}::text, {}::text, {}::text, ({}), ({})::text, ({})::text \
             FROM {} WHERE auth_user_id = $1",
            self.id,
            self.email,
            self.first_name,
            self.password,
            self.active,
            self.backend.0,
            self.extra,
            self.table
        );
        sqlx::query(&sql)
            .bind(uid(user))
            .fetch_optional(db)
            .await
            .unwrap()
            .map(|r| TargetRow {
                id: r.get(0),
                email: r.get(1),
                first_name: r.get(2),
                password: r.get(3),
                active: r.get(4),
                backend: r.get(5),
                extra: r.get(6),
            })
    }
    async fn count(&self, db: &PgPool, filter: &str) -> i64 {
        scalar(
            db,
            &format!("SELECT count(*) FROM {} WHERE {filter}", self.table),
        )
        .await
    }
    /// Waits until user `user` has a row whose first name is `marker`.
    async fn wait_first_name(&self, db: &PgPool, user: u8, marker: &str) {
        wait_for(marker, WAIT, || async {
            self.row(db, user)
                .await
                .is_some_and(|r| r.first_name.as_deref() == Some(marker))
        })
        .await;
    }
    /// The auth system's hash as this framework stores it (after any prefix).
    fn stored_hash(&self, hash: &str) -> String {
        match self.bcrypt {
            "" => hash.to_string(),
            variant => format!("${variant}${}", &hash[4..]),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct TargetRow {
    id: Option<String>,
    email: Option<String>,
    first_name: Option<String>,
    password: Option<String>,
    active: bool,
    backend: Option<String>,
    extra: Option<String>,
}
