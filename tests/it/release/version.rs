//! Releases you can tell apart: `--version` names the release and the revision, and each
//! release's version is above the one before it (release/previous.toml).

use crate::support::*;
use std::path::Path;

/// Whether `rev` names a commit of the checkout, when there is one (None: no `.git`).
fn is_commit(rev: &str) -> Option<bool> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root.join(".git").exists() {
        return None;
    }
    let out = std::process::Command::new("git")
        .args(["cat-file", "-e", &format!("{rev}^{{commit}}")])
        .current_dir(root)
        .output()
        .ok()?;
    Some(out.status.success())
}

#[test]
fn version_names_the_release_and_the_revision_it_was_built_from() {
    let out = run(binary().arg("--version")).ok();
    let revision = out
        .stdout
        .trim()
        .strip_prefix(&format!(
            "user-sync {} (revision ",
            env!("CARGO_PKG_VERSION")
        ))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `user-sync VERSION (revision R)`: {}", out.stdout))
        .to_string();
    // The build script's revision reaches every target of this build, the binary's and
    // this test's alike; HEAD may have moved since (a commit while the tests run).
    assert_eq!(
        revision,
        env!("USER_SYNC_REVISION"),
        "the revision built from"
    );
    match is_commit(&revision) {
        Some(known) => assert!(known, "{revision} is no commit of the checkout"),
        None => assert!(
            revision == "unknown"
                || revision.len() == 12 && revision.bytes().all(|b| b.is_ascii_hexdigit()),
            "{revision}"
        ),
    }
}

/// `major.minor.patch` as numbers.
fn parse(version: &str) -> (u64, u64, u64) {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().expect(version));
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next())
}

#[test]
fn this_release_is_versioned_above_the_previous_one() {
    let previous = include_str!("../../../release/previous.toml")
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .expect("release/previous.toml names a version")
        .trim_matches('"');
    assert!(
        parse(env!("CARGO_PKG_VERSION")) > parse(previous),
        "Cargo.toml's {} is not above the previous release's {previous}: bump it \
         (CHANGELOG: a migration or a default changed)",
        env!("CARGO_PKG_VERSION")
    );
}
