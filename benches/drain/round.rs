//! One round of the drain modes, and the median of several rounds per mode.

use crate::ceiling::drain_ack_only;
use crate::floor::{bare_upsert_floor, once_per_user_floor};
use crate::modes::{
    Events, Expected, Row, drain_before, drain_remote, drain_replayed, drain_target_table,
    drain_with_worker,
};
use crate::reconcile::unchanged_reconcile;
use crate::remote::DelayProxy;
use crate::setup::expected_for;

/// Settings a mode changes, as (lower-case key, value).
type Extra<'a> = &'a [(&'a str, String)];

pub(crate) struct Inputs<'a> {
    pub all: &'a Events,
    pub expected: &'a Expected,
    pub sample: &'a Events,
    pub proxy: &'a DelayProxy,
    /// The default `BATCH_SIZE`, for the floor's batches.
    pub batch: usize,
}

/// Every wanted mode once, as (key, row).
pub(crate) async fn run(
    i: &Inputs<'_>,
    wanted: &impl Fn(&str) -> bool,
) -> Vec<(&'static str, Row)> {
    let (all, expected) = (i.all, i.expected);
    let depth1 = [("pipeline_depth", "1".to_string())];
    let mut rows = Vec::new();
    if wanted("ceiling") {
        rows.push(("ceiling", drain_ack_only(all).await));
    }
    let untrailed = [("audit_retention_days", "0".to_string())];
    let plain: [(&str, &str, usize, Extra); 4] = [
        ("defaults", "user-sync, defaults", 1, &[]),
        ("depth1", "user-sync, PIPELINE_DEPTH=1", 1, &depth1),
        ("replicas", "user-sync, 2 replicas", 2, &[]),
        ("untrailed", "user-sync, audit trail off", 1, &untrailed),
    ];
    for (key, name, workers, extra) in plain {
        if wanted(key) {
            let row = drain_with_worker(name, all, expected, workers, extra).await;
            rows.push((key, row));
        }
    }
    if wanted("guide") {
        let guide = [("batch_size", "1".into()), ("prefetch", "1".into())];
        let name = "BATCH_SIZE=1, PREFETCH=1 (sample)";
        let row = drain_with_worker(name, i.sample, &expected_for(i.sample), 1, &guide).await;
        rows.push(("guide", row));
    }
    if wanted("target_table") {
        let name = "user-sync into a [target] table";
        rows.push((
            "target_table",
            drain_target_table(name, all, expected).await,
        ));
    }
    if wanted("replay") {
        let name = "user-sync, the stream again (every event stale or a duplicate)";
        rows.push(("replay", drain_replayed(name, all, expected).await));
    }
    let users = crate::env_num("DRAIN_RECONCILE_USERS", 100_000) as u64;
    let (later, same) = ("2024-06-01T00:00:00Z", "2024-01-01T00:00:00Z");
    let reconciles: [(&str, &str, &str, Extra); 3] = [
        ("reconcile", later, "a later --as-of", &[]),
        (
            "reconcile-same",
            same,
            "the --as-of it was imported at",
            &[],
        ),
        (
            "reconcile-same-untrailed",
            same,
            "the --as-of it was imported at, trail off",
            &untrailed,
        ),
    ];
    for (key, as_of, when, extra) in reconciles {
        if wanted(key) {
            let name = format!("import --full of an unchanged export ({users} users), {when}");
            let row = unchanged_reconcile(&name, users, as_of, extra).await;
            rows.push((key, row));
        }
    }
    let remote: [(&str, &str, Extra); 2] = [
        (
            "remote1",
            "remote db (1 ms round trip), PIPELINE_DEPTH=1",
            &depth1,
        ),
        ("remote", "remote db (1 ms round trip), defaults", &[]),
    ];
    for (key, name, extra) in remote {
        if wanted(key) {
            let row = drain_remote(name, all, expected, extra, i.proxy).await;
            rows.push((key, row));
        }
    }
    // `DRAIN_BEFORE=path/to/user-sync`: a build from before the pipeline, side by side.
    if let Some(bin) = std::env::var_os("DRAIN_BEFORE").map(std::path::PathBuf::from) {
        let name = "release before the pipeline (DRAIN_BEFORE), its defaults";
        if wanted("before") {
            let row = drain_before(name, &bin, all, expected, None).await;
            rows.push(("before", row));
        }
        if wanted("remote-before") {
            let name = "remote db (1 ms round trip), release before the pipeline";
            let row = drain_before(name, &bin, all, expected, Some(i.proxy)).await;
            rows.push(("remote-before", row));
        }
    }
    if wanted("floor") {
        rows.push(("floor", bare_upsert_floor(all, i.batch).await));
    }
    if wanted("floor-users") {
        rows.push(("floor-users", once_per_user_floor(all, i.batch).await));
    }
    if wanted("sweep") {
        rows.extend(sweep(all, expected).await);
    }
    rows
}

/// One row per BATCH_SIZE/PIPELINE_DEPTH/PREFETCH setting: how the defaults were chosen.
async fn sweep(all: &Events, expected: &Expected) -> Vec<(&'static str, Row)> {
    let mut rows = Vec::new();
    // PREFETCH too: it bounds what a frozen broker node strands (README, cluster).
    for (batch, depth, prefetch) in [
        (1000, 1, 2000),
        (1000, 2, 3000),
        (1000, 3, 4000),
        (2000, 1, 4000),
        (2000, 2, 4000),
        (2000, 2, 6000),
        (2000, 3, 8000),
        (3000, 2, 9000),
    ] {
        let extra = [
            ("batch_size", batch.to_string()),
            ("pipeline_depth", depth.to_string()),
            ("prefetch", prefetch.to_string()),
        ];
        let name = format!("BATCH_SIZE={batch}, PIPELINE_DEPTH={depth}, PREFETCH={prefetch}");
        let row = drain_with_worker(&name, all, expected, 1, &extra).await;
        rows.push(("sweep", row));
    }
    rows
}

/// Per mode (in the order first run), the run of median time, with the range of times.
pub(crate) fn medians(runs: Vec<(&'static str, Row)>) -> Vec<(&'static str, Row)> {
    let mut modes: Vec<(&'static str, Vec<Row>)> = Vec::new();
    for (key, row) in runs {
        match modes.iter_mut().find(|(_, rs)| rs[0].mode == row.mode) {
            Some((_, rs)) => rs.push(row),
            None => modes.push((key, vec![row])),
        }
    }
    modes
        .into_iter()
        .map(|(key, mut rs)| {
            rs.sort_by(|a, b| a.secs.total_cmp(&b.secs));
            let range = (rs[0].secs, rs[rs.len() - 1].secs);
            let mut median = rs.swap_remove((rs.len() - 1) / 2);
            median.range = Some(range).filter(|_| !rs.is_empty());
            (key, median)
        })
        .collect()
}
