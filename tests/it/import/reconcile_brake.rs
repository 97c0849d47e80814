//! The reconcile and the brake: a run's deactivations count in the window the workers
//! share, only as they are applied, and a dry run tells when `--yes` will be needed.

use super::*;
use crate::support::*;
use std::time::Duration;

/// A reconcile refused by the brake changes nothing, the brake's shared window included:
/// the workers' next deactivation still has the room it had. A refused run that recorded
/// its grant would fill the window and have the workers' next real deactivation parked
/// with the brake engaged (a page) for deactivations that never happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reconcile_takes_no_room_in_the_brake_window() {
    let env = Env::new().await.set("deactivation_brake", "3");
    let store = env.store();
    seed(&env, 1..=5).await;
    let worker = env.start().await;
    let p = env.publisher().await;
    for n in [4, 5] {
        p.delete(n, T).await;
    }
    wait_for("two deletions applied", WAIT, || async {
        active(&store).await == 3
    })
    .await;
    worker.stop().await;
    let window = "SELECT coalesce(sum(n), 0)::int8 FROM brake_window";
    assert_eq!(count(&store, window).await, 2);

    // Users 2 and 3 left out: two deactivations, one place left in the window.
    let export = Export::new(&env, "full", lines(&[student(1)]));
    let refused = full(&env, &export, T, &[]).await;
    assert_eq!(refused.code, 1, "{}", refused.text());
    assert!(
        refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );

    // The one place left is the workers'.
    let worker = env.start().await;
    p.delete(1, AFTER).await;
    let hold = env.hold();
    wait_for("the deletion applied or held", WAIT, || async {
        row(&store, 1).await.is_some_and(|r| !r.0)
            || queue_counts(&hold).await.is_some_and(|(n, _)| n > 0)
    })
    .await;
    let in_window = count(&store, window).await;
    worker.stop().await;
    assert_eq!(
        row(&store, 1).await.map(|r| r.0),
        Some(false),
        "the third deactivation was held: the refused reconcile left {} in a window of 3",
        in_window
    );
}

/// A dry run says `--yes` will be needed while the brake is engaged (or its window has no
/// room), not only when the run alone would pass DEACTIVATION_BRAKE: the real run, the
/// operator's next command, is then not refused by surprise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_says_yes_is_needed_while_the_brake_is_engaged() {
    let env = Env::new().await.set("deactivation_brake", "5");
    let store = env.store();
    seed(&env, 1..=3).await;
    // A worker on the queue engaged the brake (what `Brake::engage` records).
    store
        .brake_engaged(5, "a worker held deletions")
        .await
        .unwrap();

    let export = Export::new(&env, "full", lines(&[student(1), student(2)]));
    let dry = full(&env, &export, T, &["--dry-run", "--json"]).await;
    assert_eq!(dry.code, 0, "{}", dry.text());
    let real = full(&env, &export, T, &[]).await;
    assert_eq!(real.code, 1, "refused while engaged: {}", real.text());
    assert_eq!(
        dry.json()["needs_yes"],
        true,
        "the dry run promised no --yes was needed; the real run said: {}",
        real.stderr
    );
}

/// A plain `import` deactivates no more than DEACTIVATION_BRAKE allows, as `import --full`
/// refuses the same file. An export whose `allowed_services_json` changed shape upstream
/// would otherwise revoke every student of the school, the accident the brake exists for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_import_does_not_deactivate_past_the_brake() {
    let env = Env::new().await.set("deactivation_brake", "2");
    let store = env.store();
    seed(&env, 1..=5).await;
    let revoked: Vec<Value> = (1..=5).map(|n| record(n, "student", &["sat"])).collect();
    let export = Export::new(&env, "revoked", lines(&revoked));

    let full_run = full(&env, &export, T, &[]).await;
    assert_eq!(full_run.code, 1, "--full refuses it: {}", full_run.text());
    assert_eq!(active(&store).await, 5);

    let plain = env
        .command_within(&["import", export.path(), "--as-of", T], LIMIT)
        .await;
    let deactivated = 5 - active(&store).await;
    assert!(
        deactivated <= 2,
        "a plain import deactivated {deactivated} users past DEACTIVATION_BRAKE=2 \
         (exit {}): {}",
        plain.code,
        plain.stdout
    );
}

/// A reconcile killed midway (after some of 300 deactivations) can be run again at once:
/// the window counts the deactivations as they are applied, so the rerun applies the rest,
/// under the threshold of 500, without `--yes`. Counted whole up front, the killed run
/// would get the rerun refused, and fill the window so that the workers' next real
/// deletion engages the brake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_killed_midway_can_be_rerun() {
    let env = Env::new().await.set("batch_size", "5");
    let store = env.store();
    let ids: Vec<Value> = (0..300u32)
        .map(|i| {
            let mut r = student(1);
            r["id"] = uuid::Uuid::from_u128(0xb000 + u128::from(i))
                .to_string()
                .into();
            r["email"] = format!("many{i}@example.com").into();
            r
        })
        .collect();
    let file = Export::new(&env, "many", lines(&ids));
    env.command_within(&["import", file.path(), "--as-of", BEFORE], LIMIT)
        .await
        .ok();
    seed(&env, [1]).await;
    let export = Export::new(&env, "full", lines(&[student(1)]));
    let mut cmd = env.binary();
    cmd.args(["import", export.path(), "--full", "--as-of", T])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let gone = "SELECT count(*) FROM users WHERE deactivation_reason = 'absent_from_export'";
    wait_for("the first deactivations", WAIT, || async {
        count(&store, gone).await > 0
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    // A COMMIT already sent when the client died still commits.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = count(&store, gone).await;

    let out = full(&env, &export, T, &["--json"]).await;
    assert_eq!(
        out.code,
        0,
        "killed after {killed_at} of 300 (DEACTIVATION_BRAKE 500): {}",
        out.text()
    );
    let s = out.json();
    assert_eq!(s["would_deactivate"].as_i64(), Some(300 - killed_at), "{s}");
    assert_eq!(count(&store, gone).await, 300);
    assert_eq!(active(&store).await, 1);
    let again = full(&env, &export, T, &[]).await.ok();
    assert!(again.stdout.contains("changed: 0\n"), "{}", again.stdout);
}

/// The brake off (DEACTIVATION_BRAKE=0), the audit trail off (AUDIT_RETENTION_DAYS=0) and
/// signing on (EVENT_SIGNING_KEYS): a reconcile that deactivates more than the default
/// threshold needs no `--yes`, writes no trail and no window, and its records need no
/// signature (the operator's file is not a message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_with_the_brake_and_trail_off_and_signing_on_needs_no_yes_and_writes_no_trail()
{
    let env = Env::new()
        .await
        .set("deactivation_brake", "0")
        .set("audit_retention_days", "0")
        .set("event_signing_keys", "0123456789abcdef0123");
    let store = env.store();
    let records: Vec<Value> = (1..=250u32)
        .flat_map(|i| {
            let id = uuid::Uuid::from_u128(0xa000 + u128::from(i));
            let mut r = student(1);
            r["id"] = id.to_string().into();
            r["email"] = format!("bulk{i}@example.com").into();
            [r]
        })
        .collect();
    let file = Export::new(&env, "bulk", lines(&records));
    env.command_within(&["import", file.path(), "--as-of", BEFORE], LIMIT)
        .await
        .ok();
    seed(&env, [1]).await;
    let export = Export::new(&env, "full", lines(&[student(1)]));
    let out = full(&env, &export, T, &["--json"]).await.ok();
    let s = out.json();
    assert_eq!(s["reconcile"]["absent"]["deactivated"], 250, "{s}");
    assert_eq!(s["needs_yes"], false, "{s}");
    assert_eq!(active(&store).await, 1);
    assert_eq!(count(&store, "SELECT count(*) FROM audit_trail").await, 0);
    assert_eq!(count(&store, "SELECT count(*) FROM brake_window").await, 0);
}
