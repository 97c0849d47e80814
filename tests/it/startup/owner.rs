//! One schema, one service: the schema records the service it syncs for, and a worker or
//! command of another `SERVICE_NAME` refuses it at start with exit 2.

use crate::support::*;
use std::time::Duration;
use user_sync::store::{SetupError, Store};
use user_sync::target_table::TargetTable;

fn accounts() -> TargetTable {
    let toml = r#"
        [target]
        table = "public.accounts"
        key = "auth_user_id"
        [target.columns]
        email = "email"
        [target.deactivation]
        flag = "active"
    "#;
    mapping_of(toml)
}

/// A store on `env`'s database for `service` in `schema`, mapping `public.accounts` if
/// `mapped`.
fn store(env: &Env, service: &str, schema: &str, mapped: bool) -> Store {
    let mut settings = env.settings();
    settings.service_name = service.into();
    settings.database_schema = schema.into();
    settings.target_table = mapped.then(accounts);
    Store::new(&settings).unwrap()
}

fn refusal(result: Result<(), SetupError>) -> String {
    match result {
        Err(SetupError::Config(problem)) => problem,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_service_on_a_claimed_schema_exits_2_naming_both() {
    let env = Env::new().await;
    env.command(&["migrate"]).ok();
    let sat = env.set("service_name", "sat");
    for args in [
        &["migrate"][..],
        &["run"],
        &["explain", "a@example.com"],
        &["brake", "status"],
    ] {
        let out = sat.command_within(args, Duration::from_secs(60)).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.text());
        for named in ["\"lms\"", "\"sat\"", "DATABASE_SCHEMA", "SERVICE_NAME"] {
            assert!(
                out.text().contains(named),
                "{args:?} names {named}: {}",
                out.text()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_on_two_schemas_of_one_database_both_run() {
    let lms = Env::new().await;
    let sat = Env::new()
        .await
        .set("database_url", &lms.db.url())
        .set("service_name", "sat")
        .set("database_schema", "user_sync_sat");
    let (a, b) = (lms.start().await, sat.start().await);
    for env in [&lms, &sat] {
        env.publisher()
            .await
            .create_student(1, &["lms", "sat"])
            .await;
    }
    for env in [&lms, &sat] {
        let store = env.store();
        wait_for("each service's row", Duration::from_secs(20), || async {
            row(&store, 1).await.is_some_and(|r| r.0)
        })
        .await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_mapped_for_another_service_through_another_schema_is_refused() {
    let env = Env::new().await;
    store(&env, "lms", "sync_lms", true)
        .migrate_and_claim()
        .await
        .unwrap();
    let problem = refusal(
        store(&env, "sat", "sync_sat", true)
            .migrate_and_claim()
            .await,
    );
    for named in [
        "public.accounts",
        "\"lms\"",
        "sync_lms",
        "\"sat\"",
        "[target]",
    ] {
        assert!(problem.contains(named), "names {named}: {problem}");
    }
    // The same service through a schema of its own, and another service without the table.
    store(&env, "lms", "sync_lms_2", true)
        .migrate_and_claim()
        .await
        .unwrap();
    store(&env, "sat", "sync_sat", false)
        .migrate_and_claim()
        .await
        .unwrap();
}

/// Two services starting at once on one schema, or on one target table through two
/// schemas: exactly one claims it, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_starting_at_once_cannot_both_claim() {
    let env = Env::new().await;
    for round in 0..6 {
        let schema = format!("shared_{round}");
        let (a, b) = (
            store(&env, "lms", &schema, false),
            store(&env, "sat", &schema, false),
        );
        let (ra, rb) = tokio::join!(a.migrate_and_claim(), b.migrate_and_claim());
        assert!(ra.is_ok() != rb.is_ok(), "round {round}: {ra:?} {rb:?}");
        let (a, b) = (
            store(&env, "lms", &format!("t_lms_{round}"), true),
            store(&env, "sat", &format!("t_sat_{round}"), true),
        );
        let (ra, rb) = tokio::join!(a.migrate_and_claim(), b.migrate_and_claim());
        assert!(
            ra.is_ok() != rb.is_ok(),
            "round {round}, mapped: {ra:?} {rb:?}"
        );
        // Free the table for the next round.
        let drop = format!("DROP SCHEMA t_lms_{round} CASCADE; DROP SCHEMA t_sat_{round} CASCADE");
        sqlx::raw_sql(&drop)
            .execute(env.store().pool())
            .await
            .unwrap();
    }
}

/// A schema an earlier release migrated carries no claim: the first service to start on it
/// claims it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_schema_goes_to_the_first_service_that_starts() {
    let env = Env::new().await;
    let lms = store(&env, "lms", "user_sync", false);
    lms.migrate().await.unwrap();
    store(&env, "sat", "user_sync", false)
        .migrate_and_claim()
        .await
        .unwrap();
    let problem = refusal(lms.migrate_and_claim().await);
    assert!(problem.contains("\"sat\""), "{problem}");
    let comment: Option<String> =
        sqlx::query_scalar("SELECT obj_description('user_sync'::regnamespace, 'pg_namespace')")
            .fetch_one(lms.pool())
            .await
            .unwrap();
    assert!(comment.is_some_and(|c| c.contains("\"service\":\"sat\"")));
}

/// A command of the same service run without the settings file (`brake status` on a
/// laptop, say) leaves the schema's claim on its `[target]` table as it is: otherwise the
/// table would look free and another service could map it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_without_the_target_table_keeps_the_claim_on_it() {
    let env = Env::new().await;
    for mapped in [true, false] {
        let lms = store(&env, "lms", "sync_lms", mapped);
        lms.migrate_and_claim().await.unwrap();
    }
    let sat = store(&env, "sat", "sync_sat", true);
    let problem = refusal(sat.migrate_and_claim().await);
    assert!(problem.contains("public.accounts"), "{problem}");
}
