//! Releases you can tell apart: `--version` names the release and the revision, and each
//! release's version is above the one before it (release/previous.toml).

use crate::support::*;
use std::path::Path;

/// The revision build.rs found: the checkout's HEAD, else what the build was given.
fn built_from() -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root.join(".git").exists() {
        return None;
    }
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
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
    match built_from() {
        Some(head) => assert_eq!(revision, head, "the checkout's HEAD"),
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
