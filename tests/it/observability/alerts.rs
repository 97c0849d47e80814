//! Every series the alert rules (deploy/alerts.yml) and the Grafana dashboard
//! (deploy/grafana/user-sync.json) query is one a running worker exports.

use crate::support::*;
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// The series names in `text` that start with one of `prefixes` (`user_sync_[a-z_]+`);
/// a bare prefix (`user_sync_*` in a comment) is not a name.
fn names_in(text: &str, prefixes: &[&str]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in prefixes {
        for (at, _) in text.match_indices(prefix) {
            // Only at a word start: `xuser_sync_` is not ours.
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if name.len() > prefix.len() && !name.ends_with('_') {
                names.insert(name);
            }
        }
    }
    names
}

/// The sample names of an exposition, labels and values left out.
fn exported(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

/// A queried name is exported as it is, or it is a histogram's base name.
fn is_exported(name: &str, exported: &BTreeSet<String>) -> bool {
    exported.contains(name)
        || ["_bucket", "_count", "_sum"]
            .iter()
            .any(|s| exported.contains(&format!("{name}{s}")))
}

/// Every series the alert rules and the dashboard query is exported by a running worker, with
/// plausible values after one applied event: an alert on a series that does not exist never
/// fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_alerts_and_the_dashboard_query_is_exported() {
    let root = env!("CARGO_MANIFEST_DIR");
    let alerts = std::fs::read_to_string(format!("{root}/deploy/alerts.yml")).unwrap();
    let dashboard =
        std::fs::read_to_string(format!("{root}/deploy/grafana/user-sync.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    let prefixes = ["user_sync_", "process_"];
    let queried: BTreeSet<String> = names_in(&alerts, &prefixes)
        .into_iter()
        .chain(names_in(&dashboard, &prefixes))
        .collect();
    // The parser finds what the files are known to query.
    for name in [
        "user_sync_dead_letters_total",
        "user_sync_last_commit_timestamp_seconds",
        "user_sync_event_lag_seconds",
        "user_sync_delivery_to_commit_seconds_bucket",
        "process_resident_memory_bytes",
    ] {
        assert!(queried.contains(name), "{name} not found in {queried:?}");
    }

    let env = Env::new().await;
    let worker = env.start().await;
    let p = env.publisher().await;
    p.create_student(1, &["lms"]).await;
    wait_for("one event applied", WAIT, || async {
        let (_, text) = http_get(worker.http, "/metrics").await;
        text.contains("user_sync_events_total{outcome=\"applied\"} 1")
    })
    .await;
    let (status, text) = http_get(worker.http, "/metrics").await;
    assert_eq!(status, 200);
    let exported = exported(&text);
    let missing: Vec<&String> = queried
        .iter()
        .filter(|n| !is_exported(n, &exported))
        .collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\n{text}"
    );

    // The values behind them are plausible after one applied event.
    let value = |start: &str| {
        text.lines()
            .find(|l| l.starts_with(start))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    // The event is dated 2024-01-01T00:00:00Z: the lag is its age at the commit.
    let lag = value("user_sync_event_lag_seconds ").unwrap();
    let commit = value("user_sync_last_commit_timestamp_seconds ").unwrap();
    assert!(commit > 1.7e9, "{commit}");
    assert!(
        (commit - 1_704_067_200.0 - lag).abs() < 1.0,
        "{commit} {lag}"
    );
    assert!(value("process_resident_memory_bytes ").unwrap() > 1e6);
    assert!(value("process_cpu_seconds_total ").unwrap() > 0.0);
    assert_eq!(value("user_sync_broker_reconnects_total "), Some(0.0));
    let build = format!(
        "user_sync_build_info{{version=\"{}\",revision=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        env!("USER_SYNC_REVISION")
    );
    assert!(text.contains(&build), "{text}");
    for kind in [
        "permanent",
        "retries_exhausted",
        "email_conflict",
        "bad_signature",
    ] {
        let zero = format!("user_sync_dead_letters_total{{kind=\"{kind}\"}} 0");
        assert!(text.contains(&zero), "{zero} missing in {text}");
    }
    worker.stop().await;
}

/// Series names are read from an expression as written (inside functions and selectors,
/// not from a bare prefix or a longer word), so the check above cannot pass by missing them.
#[test]
fn names_are_read_from_expressions() {
    let expr = r#"histogram_quantile(0.99, sum by (le) (rate(user_sync_delivery_to_commit_seconds_bucket{job="$job"}[5m]))) and user_sync_* xuser_sync_no"#;
    let names = names_in(expr, &["user_sync_"]);
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["user_sync_delivery_to_commit_seconds_bucket"]
    );
}
