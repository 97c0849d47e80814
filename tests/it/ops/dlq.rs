//! `dlq list`, `show`, `replay` and `purge`: browsing spends nothing, a replay ends and
//! says what came back, a letter outlives its producer's expiration.

use super::*;
use crate::support::*;
use std::time::Duration;

/// The DLQ's letters are listed and shown with the hash masked, browsing consumes nothing, a
/// replay after the cause is fixed applies the letter once, and a purge needs `--yes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_masked_replayed_once_fixed_and_purged() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    // User 2 takes user 1's email while user 1 is active: retried, then dead-lettered.
    p.email_clash().await;
    let dlq = env.dlq();
    env.wait_dead_letters(1, "dead-lettered", WAIT).await;

    let Run {
        code, stdout: out, ..
    } = env.command(&["dlq", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("email_conflict") && out.contains(&uid(2).to_string()),
        "{out}"
    );
    assert!(out.starts_with("#  routing key"), "{out}");
    let out = env.command(&["dlq", "show", "1"]).stdout;
    assert!(
        out.contains("\"password_hash\": \"***\"") && !out.contains(HASH),
        "{out}"
    );
    assert!(out.contains("x-error-kind: email_conflict"), "{out}");
    let letters = env.command(&["dlq", "list", "--json"]).json();
    assert_eq!(letters[0]["attempts"], 3);
    assert_eq!(
        queue_counts(&dlq).await.unwrap().0,
        1,
        "browsing consumed nothing"
    );

    // Fix the cause (user 1 leaves), then replay: user 2 is applied.
    p.delete(1, "2024-01-03T00:00:00Z").await;
    let store = env.store();
    wait_for("user 1 inactive", WAIT, || async {
        row(&store, 1).await.is_some_and(|r| !r.0)
    })
    .await;
    let out = env
        .command(&["dlq", "replay", "--kind", "permanent"])
        .stdout;
    assert!(
        out.contains("replayed 0") && out.contains("1 of other kinds"),
        "{out}"
    );
    let Run {
        code, stdout: out, ..
    } = env.command(&["dlq", "replay"]);
    assert_eq!(code, 0);
    assert!(out.contains("replayed 1"), "{out}");
    wait_for("user 2 applied", WAIT, || async {
        row(&store, 2).await.is_some_and(|r| r.0)
    })
    .await;
    assert_eq!(queue_counts(&dlq).await.unwrap().0, 0);

    p.publish("user.created", b"[]").await;
    env.wait_dead_letters(1, "dead-lettered", WAIT).await;
    let purge = env.command(&["dlq", "purge"]);
    assert_ne!(purge.code, 0);
    assert!(purge.stderr.contains("--yes"));
    let purge = env.command(&["dlq", "purge", "--yes"]);
    assert_eq!(
        (purge.code, purge.stdout.trim()),
        (0, "purged 1 dead letter(s)")
    );
    worker.stop().await;
}

/// A dead letter carries no expiration of the producer's: it stays in the DLQ until an
/// operator acts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_outlives_the_producers_expiration() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    let ttl = Duration::from_millis(300);
    let props = lapin::BasicProperties::default().with_expiration("300".into());
    p.publish_with("user.created", b"[]", props).await;
    env.wait_dead_letters(1, "dead-lettered", WAIT).await;
    // What is tested is time passing: the producer's TTL must be long gone.
    tokio::time::sleep(ttl * 4).await;
    let letters = env.dead_letters().await;
    assert_eq!(letters.len(), 1, "the dead letter expired");
    assert_eq!(letters[0].properties.expiration(), &None);
    worker.stop().await;
}

/// Fifty letters that fail again the moment they are replayed.
async fn fifty_bad_letters(env: &Env, p: &Publisher) -> String {
    for _ in 0..50 {
        p.publish("user.created", b"[]").await;
    }
    env.wait_dead_letters(50, "dead-lettered", WAIT).await;
    env.dlq()
}

/// A replay whose letters fail again ends (exit 3) and reports how many came straight back,
/// instead of replaying them for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_ends_when_the_cause_is_not_fixed_and_reports_what_came_back() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    let dlq = fifty_bad_letters(&env, &p).await;

    // Text first: a replay that never ends fails here.
    let out = env
        .command_within(&["dlq", "replay"], Duration::from_secs(45))
        .await;
    assert_eq!(out.code, 3, "{}", out.text());
    let text = out.stdout;
    assert!(
        text.contains("replayed 50") && text.contains("50 came straight back"),
        "{text}"
    );
    wait_depth(&dlq, 50, "all back in the DLQ", WAIT).await;

    let out = env
        .command_within(&["dlq", "replay", "--json"], Duration::from_secs(45))
        .await;
    assert_eq!(out.code, 3, "some came straight back: {}", out.text());
    let report = out.json();
    assert_eq!(report["replayed"], 50, "{report}");
    assert_eq!(report["came_back"], 50, "{report}");
    worker.stop().await;
}

/// Browsing the DLQ (`dlq list`, `dlq show`, `explain`) spends no delivery attempt: with a
/// delivery limit on the queue, every letter remains, in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsing_the_dlq_spends_no_delivery_attempt() {
    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    p.publish("user.created", b"[]").await;
    p.publish("user.updated", b"{not json").await;
    p.email_clash().await;
    let dlq = env.dlq();
    env.wait_dead_letters(3, "dead-lettered", WAIT).await;
    worker.stop().await;
    let _policy = Policy::set(&dlq, r#"{"delivery-limit":2}"#).await;

    let first = env.command(&["dlq", "list", "--json"]).stdout;
    for _ in 0..4 {
        let again = env.command(&["dlq", "list", "--json"]);
        assert_eq!(
            (again.code, &again.stdout),
            (0, &first),
            "same letters, same order"
        );
        let shown = env.command(&["dlq", "show", "3", "--json"]);
        assert_eq!(shown.code, 0);
        assert!(shown.stdout.contains("email_conflict"), "{}", shown.stdout);
    }
    let explained = env.command(&["explain", &uid(2).to_string()]);
    assert_eq!(explained.code, 0);
    assert_eq!(
        queue_counts(&dlq).await.unwrap().0,
        3,
        "every letter remains"
    );
    let letters: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(letters.as_array().unwrap().len(), 3);
    let last = env.command(&["dlq", "list", "--json"]).stdout;
    assert_eq!(last, first);
}
