//! The command line's promises to scripts, through the real binary: one exit code per
//! outcome (0 done, 1 failed, 2 usage or configuration, 3 done but some came back), and
//! no command asking for a setting it does not use.

use super::*;
use crate::support::*;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(45);

/// A working directory of the test's own holding an empty `.env`: dotenvy reads the first
/// `.env` it finds in the directory or above, so none left in a parent can set a variable.
fn cwd() -> Dir {
    let dir = Dir::new("usync-cli");
    dir.write(".env", "");
    dir
}

/// The binary with this environment's settings but `DATABASE_URL`.
fn without_database(env: &Env, cwd: &Dir, args: &[&str]) -> Command {
    let mut cmd = env.binary();
    cmd.env_remove("DATABASE_URL")
        .current_dir(cwd.path())
        .args(args);
    cmd
}

/// A command that did what it was asked exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_0_when_done() {
    let env = Env::new().await;
    env.declare().await;
    let out = env.command_within(&["dlq", "list"], LIMIT).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert_eq!(out.stdout.trim(), "the dead-letter queue is empty");
}

/// A command that fails (the broker unreachable) exits 1, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_1_when_the_broker_is_unreachable() {
    let closed = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let env = Env::new().await.set("rabbitmq_url", &closed);
    for args in [&["dlq", "list"][..], &["status"], &["send"]] {
        let out = env.command_within(args, LIMIT).await;
        assert_eq!(out.code, 1, "{args:?}: {}", out.text());
        assert!(
            !out.text().contains(&broker_credentials()),
            "{}",
            out.text()
        );
    }
}

/// A usage or configuration mistake (an unknown `--kind` or `--type`, a purge without
/// `--yes`, a malformed setting) exits 2, naming it, so a script does not retry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_2_for_a_usage_or_configuration_mistake() {
    let env = Env::new().await;
    let typo = env
        .command_within(&["dlq", "replay", "--kind", "permanant"], LIMIT)
        .await;
    assert_eq!(typo.code, 2, "{}", typo.text());
    for kind in [
        "permanent",
        "retries_exhausted",
        "email_conflict",
        "bad_signature",
    ] {
        assert!(typo.stderr.contains(kind), "{}", typo.stderr);
    }
    let typo = env
        .command_within(&["send", "--type", "renamed"], LIMIT)
        .await;
    assert_eq!(typo.code, 2, "{}", typo.text());
    assert!(
        typo.stderr.contains("created, updated, deleted"),
        "{}",
        typo.stderr
    );
    let purge = env.command_within(&["dlq", "purge"], LIMIT).await;
    assert_eq!(purge.code, 2, "{}", purge.text());
    assert!(purge.stderr.contains("--yes"), "{}", purge.stderr);

    let invalid = env.set("prefetch", "lots");
    for args in [&["dlq", "list"][..], &["status"], &["run"]] {
        let out = invalid.command_within(args, LIMIT).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.text());
        assert!(out.stderr.contains("PREFETCH"), "{}", out.stderr);
    }
}

/// A replay that moved letters which came straight back exits 3: done, but some came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_3_when_replayed_letters_come_straight_back() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    for _ in 0..3 {
        p.publish("user.created", b"[]").await;
    }
    env.wait_dead_letters(3, "dead-lettered", WAIT).await;

    let out = env
        .command_within(&["dlq", "replay", "--json"], LIMIT)
        .await;
    assert_eq!(out.code, 3, "{}", out.text());
    let report = out.json();
    assert_eq!(report["replayed"], 3, "{report}");
    assert_eq!(report["came_back"], 3, "{report}");
    env.wait_dead_letters(3, "back in the DLQ", WAIT).await;

    // Replaying a kind that is not there moves nothing, so nothing can come back.
    let none = env
        .command_within(&["dlq", "replay", "--kind", "email_conflict"], LIMIT)
        .await;
    assert_eq!(none.code, 0, "{}", none.text());
    assert!(none.stdout.contains("replayed 0"), "{}", none.stdout);
    worker.stop().await;
}

/// The broker's commands (`send`, `dlq list`, `status`) run without DATABASE_URL: an
/// operator on the broker's side needs no database credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_commands_run_without_a_database_url() {
    let env = Env::new().await;
    env.declare().await;
    let cwd = cwd();

    let id = uid(5).to_string();
    let sent = without_database(&env, &cwd, &["send", "--user-id", &id]);
    let sent = run_within(sent, LIMIT).await;
    assert_eq!(sent.code, 0, "{}", sent.text());
    wait_depth(&env.broker.queue, 1, "the event queued", WAIT).await;

    let listed = run_within(without_database(&env, &cwd, &["dlq", "list"]), LIMIT).await;
    assert_eq!(listed.code, 0, "{}", listed.text());

    let status = run_within(without_database(&env, &cwd, &["status"]), LIMIT).await;
    assert_eq!(status.code, 0, "{}", status.text());
    assert!(
        status.stdout.starts_with("queue") && status.stdout.contains("not configured"),
        "{}",
        status.stdout
    );
    let status = without_database(&env, &cwd, &["status", "--json"]);
    let status = run_within(status, LIMIT).await;
    assert_eq!(status.code, 0, "{}", status.text());
    let v = status.json();
    assert_eq!(v["queues"][0]["messages"], 1, "{v}");
    assert_eq!(v["database"]["configured"], false, "{v}");
}

/// The commands that need the database stop at once without DATABASE_URL, exit 2, naming
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_commands_stop_at_once_naming_database_url() {
    let env = Env::new().await;
    let cwd = cwd();
    let cases = [
        (&["run"][..], "run"),
        (&["migrate"], "migrate"),
        (&["explain", "a@example.com"], "explain"),
        (&["brake", "status"], "brake status"),
        (&["import", "users.jsonl"], "import"),
    ];
    for (args, name) in cases {
        let out = run_within(without_database(&env, &cwd, args), LIMIT).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.text());
        let said = format!("DATABASE_URL: is required by `user-sync {name}`");
        assert!(out.stderr.contains(&said), "{args:?}: {}", out.stderr);
    }
}
