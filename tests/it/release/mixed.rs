//! The previous release (release/previous.toml, built by scripts/build-previous) and this
//! build on ONE queue and ONE database while events flow: the previous release deployed
//! and migrating, this one rolled out beside it, the previous one stopped, then started
//! again (a rollback) before this one is removed. The table must end as the reference
//! model says, nothing dead-lettered, and neither process may exit by itself.
//!
//! Ignored in the plain run because it needs the previous binary; `.ci/run` builds it,
//! sets `TEST_PREVIOUS_BIN` and runs this with `--ignored`. Without the variable it fails
//! rather than skips.

use super::process::Process;
use super::traffic::{Traffic, stream};
use crate::support::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use user_sync::decide;

const EVENTS: usize = 2000;

fn previous_binary() -> PathBuf {
    let path = std::env::var("TEST_PREVIOUS_BIN")
        .expect("TEST_PREVIOUS_BIN: the previous release's binary (scripts/build-previous)");
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "TEST_PREVIOUS_BIN: no file at {}",
        path.display()
    );
    path
}

/// `migrate` of `program`, as an init container runs it: must exit 0.
fn migrate(program: &std::path::Path, env: &Env, who: &str) {
    let out = run(env.binary_at(program).arg("migrate"));
    assert_eq!(out.code, 0, "{who}'s migrate: {}", out.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the previous release's binary (scripts/build-previous, TEST_PREVIOUS_BIN)"]
async fn the_previous_release_and_this_one_share_a_queue_through_an_upgrade_and_a_rollback() {
    let previous = previous_binary();
    let current = PathBuf::from(env!("CARGO_BIN_EXE_user-sync"));
    let version = |p: &PathBuf| run(std::process::Command::new(p).arg("--version")).stdout;
    assert_ne!(version(&previous), version(&current), "releases tell apart");

    let seed = std::env::var("TEST_SEED").map_or_else(
        |_| std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos() as u64,
        |s| s.parse().expect("TEST_SEED"),
    );
    eprintln!("mixed versions: TEST_SEED={seed}");
    let events = stream(seed, EVENTS);
    let planned: Vec<_> = events.iter().map(planned).collect();
    let expected = decide::converge(&planned);

    // The brake would hold this many deletions; it is not under test.
    let env = Env::new().await.set("deactivation_brake", "0");
    let started = Instant::now();
    // Deployed: the previous release migrates a new database and consumes.
    let mut old = Process::start("previous", &previous, &env);
    env.wait_consumers(1, "previous consuming", Duration::from_secs(30))
        .await;
    let traffic = Traffic::start(&env, events).await;

    traffic.reached(15).await;
    migrate(&current, &env, "this release");
    let mut new = Process::start("current", &current, &env);
    env.wait_consumers(2, "both consuming", Duration::from_secs(30))
        .await;
    traffic.assert_flowing("this release consuming beside the previous");

    traffic.reached(35).await;
    old.assert_running();
    let mut decided = vec![("previous", old.stop().await)];
    traffic.assert_flowing("the previous release stopped");

    // The rollback: the previous release's init step and worker on the schema this
    // release has run, while this one still consumes; then this one is removed.
    traffic.reached(50).await;
    migrate(&previous, &env, "the previous release");
    let mut old = Process::start("previous again", &previous, &env);
    env.wait_consumers(2, "both consuming again", Duration::from_secs(30))
        .await;
    traffic.assert_flowing("the previous release started again");
    traffic.reached(70).await;
    new.assert_running();
    decided.push(("current", new.stop().await));
    traffic.assert_flowing("this release removed");

    traffic.finish().await;
    let store = env.store();
    let mut actual = Default::default();
    let converged = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            actual = store.states().await.unwrap();
            if actual == expected {
                return;
            }
            old.assert_running();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if converged.is_err() {
        assert_eq!(
            actual, expected,
            "the table is not the model (TEST_SEED={seed})"
        );
    }
    let queue = env.broker.queue.clone();
    wait_for("queue settled", Duration::from_secs(20), || async {
        unsettled(&queue) == Some(0)
    })
    .await;
    assert_eq!(
        queue_counts(&env.dlq()).await.map(|c| c.0),
        Some(0),
        "dead letters"
    );
    assert_eq!(
        queue_counts(&env.hold()).await.map(|c| c.0),
        Some(0),
        "held"
    );
    decided.push(("previous again", old.stop().await));
    explain_shows_both_releases_lines(&env, &previous).await;
    eprintln!(
        "mixed versions: {} deliveries of {EVENTS} events, {} users, converged in {:?}; \
         decisions logged: {decided:?}",
        planned.len(),
        expected.len(),
        started.elapsed()
    );
    for (who, n) in decided {
        assert!(n > 0, "{who} applied nothing: the steps missed the traffic");
    }
}

/// A user both releases wrote trail lines for: this release reads every line of both
/// tables (the previous release's in `audit_log`, this one's in `audit_trail`), its
/// `explain` the newest of them, and the previous release's `explain` still runs on the
/// schema and shows its own.
async fn explain_shows_both_releases_lines(env: &Env, previous: &std::path::Path) {
    let store = env.store();
    let (user, in_log, in_trail): (uuid::Uuid, i64, i64) = sqlx::query_as(
        "SELECT auth_user_id, l.n, t.n \
         FROM (SELECT auth_user_id, count(*) n FROM audit_trail GROUP BY 1) t \
         JOIN (SELECT auth_user_id, count(*) n FROM audit_log GROUP BY 1) l USING (auth_user_id) \
         ORDER BY least(l.n, t.n) DESC LIMIT 1",
    )
    .fetch_one(store.pool())
    .await
    .expect("a user with lines of both releases");
    let mut written: Vec<String> = sqlx::query_scalar(
        "SELECT coalesce(event_id, '-') FROM audit_log WHERE auth_user_id = $1 UNION ALL \
         SELECT coalesce(event_key, event_id::text, '-') FROM audit_trail WHERE auth_user_id = $1",
    )
    .bind(user)
    .fetch_all(store.pool())
    .await
    .unwrap();
    let trail = store.trail(user, 10_000).await.unwrap();
    let mut read: Vec<String> = trail
        .iter()
        .map(|t| t.event_id.clone().unwrap_or("-".into()))
        .collect();
    written.sort();
    read.sort();
    assert_eq!(
        read, written,
        "{user}: audit_log {in_log}, audit_trail {in_trail}"
    );
    let shown =
        |json: serde_json::Value| json["users"][0]["trail"].as_array().unwrap().len() as i64;
    let id = user.to_string();
    let current = env.command(&["explain", &id, "--json"]).ok().json();
    assert_eq!(
        shown(current),
        (in_log + in_trail).min(50),
        "this release's explain"
    );
    let old = run(env.binary_at(previous).args(["explain", &id, "--json"]));
    assert_eq!(
        old.code,
        0,
        "the previous release's explain: {}",
        old.text()
    );
    assert_eq!(
        shown(old.json()),
        in_log.min(50),
        "the previous release's explain"
    );
    eprintln!("mixed versions: {user}'s trail: audit_log {in_log}, audit_trail {in_trail}");
}
