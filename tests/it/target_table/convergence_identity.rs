//! The convergence rule on ASP.NET Identity's table, whose deactivation is `LockoutEnd`
//! set to `timestamp_value`, with upper-cased normalized columns and insert-only ones.

use super::*;
use crate::support::*;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use sqlx::Row;
use std::collections::BTreeMap;
use std::time::Duration;
use user_sync::decide::{self, Planned};

/// (Email, NormalizedEmail, NormalizedUserName, FirstName, LastName, active) of a row.
type IdentityRow = (String, String, String, Option<String>, Option<String>, bool);

async fn identity_rows(db: &PgPool) -> BTreeMap<uuid::Uuid, IdentityRow> {
    sqlx::query(
        r#"SELECT auth_user_id, "Email"::text, "NormalizedEmail"::text,
                  "NormalizedUserName"::text, "FirstName", "LastName",
                  "LockoutEnd" IS NULL
           FROM "AspNetUsers" WHERE auth_user_id IS NOT NULL"#,
    )
    .fetch_all(db)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        let row = (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6));
        (r.get(0), row)
    })
    .collect()
}

/// Two replicas on Identity's table, fed a shuffled history with duplicates, end in the
/// model: an active user has no `LockoutEnd`, a deactivated one has it; the normalized
/// columns are the email upper-cased; the legacy row is adopted and keeps its own `Id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_two_replicas_converge_to_the_model() {
    let env = Env::new().await.set("batch_size", "7");
    let mapping = IDENTITY.create(&env).await;
    let db = &backend(&env).await;
    let a = IDENTITY.start(&env, mapping.clone()).await;
    let b = IDENTITY.start(&env, mapping).await;
    let p = env.publisher().await;
    let shape = Shape {
        users: 5,
        seconds: 4,
        roles: &["student", "teacher", "admin"],
        names: &["Name0", "Name1", "Name2"],
    };
    let mut runner = TestRunner::deterministic();
    let history = prop::collection::vec(arb_event(shape), 300)
        .new_tree(&mut runner)
        .unwrap();
    let history = proptest::strategy::ValueTree::current(&history);
    for e in replayed_out_of_order(&history) {
        p.publish_json(e).await;
    }
    let planned: Vec<Planned> = history
        .iter()
        .map(|e| plan_as(e, &default_membership()))
        .collect();
    let expected: BTreeMap<uuid::Uuid, IdentityRow> = decide::converge(&planned)
        .into_iter()
        .filter_map(|(id, state)| {
            let row = state.row?;
            let upper = row.email.to_uppercase();
            let names = (row.first_name, row.last_name);
            Some((
                id,
                (
                    row.email,
                    upper.clone(),
                    upper,
                    names.0,
                    names.1,
                    row.is_active,
                ),
            ))
        })
        .collect();
    assert!(
        expected.len() >= 3,
        "a history that creates rows: {expected:?}"
    );
    wait_depth(
        &env.broker.queue,
        0,
        "queue drained",
        Duration::from_secs(30),
    )
    .await;
    wait_for("target converged", Duration::from_secs(30), || async {
        identity_rows(db).await == expected
    })
    .await;
    if expected.contains_key(&uid(1)) {
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
    a.stop().await;
    b.stop().await;
}
