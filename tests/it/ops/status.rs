//! `status`: what was published, what waits, what the table holds.

use super::*;
use crate::support::*;

/// `status` reports each queue's depth and consumers and what the table holds, as text and
/// JSON, and says when the database is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_what_was_published_and_what_the_table_holds() {
    let env = Env::new().await;
    // The topology exists, nobody consumes: published events wait in the main queue.
    let worker = env.start().await;
    worker.stop().await;
    let p = env.publisher().await;
    for user in 1..=3 {
        p.create_student(user, &["lms"]).await;
    }
    let status = env.command(&["status", "--json"]);
    assert_eq!(status.code, 0, "{}", status.stdout);
    let v = status.json();
    let main = &v["queues"][0];
    assert_eq!(main["queue"], env.broker.queue.as_str());
    assert_eq!(
        (main["messages"].as_u64(), main["consumers"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(v["queues"][3]["role"], "dead letters");
    assert_eq!(v["queues"][3]["messages"], 0);
    assert_eq!(v["database"]["active"], 0);

    let worker = env.start().await;
    p.delete(3, "2024-02-01T00:00:00Z").await;
    let store = env.store();
    wait_for("applied", WAIT, || async {
        row(&store, 3).await.is_some_and(|r| !r.0)
    })
    .await;
    let Run {
        code, stdout: out, ..
    } = env.command(&["status"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["queue", "role", "ready", "consumers"]
    );
    assert!(
        lines[1].starts_with(&env.broker.queue) && lines[1].ends_with(" 1"),
        "{out}"
    );
    let has_row = |cells: &[&str]| {
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == cells)
    };
    assert!(has_row(&["active", "2"]), "{out}");
    assert!(has_row(&["inactive", "(deleted)", "1"]), "{out}");
    assert!(
        has_row(&["newest", "event", "2024-02-01T00:00:00Z"]),
        "{out}"
    );
    worker.stop().await;

    let unreachable = run(env
        .binary()
        .args(["status"])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x"));
    assert_eq!(unreachable.code, 1);
    assert!(unreachable.stdout.contains("database unreachable"));
}
