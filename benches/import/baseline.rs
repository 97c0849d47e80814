//! The baseline: the in-memory import this one replaced (commit `908f20c`, which read the
//! whole file, then parsed every record into memory). Its release binary is built once,
//! from a temporary worktree of that commit, into `target/import-baseline` (a target
//! directory of its own, so nothing of the current build is touched), and reused while
//! it is there: delete that directory to build it again.

use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) const COMMIT: &str = "908f20c";

/// Which sizes the baseline runs on: `IMPORT_BASELINE=0` none, `all` every size (the
/// in-memory import of 1 000 000 users needs about 1.8 GB), otherwise up to 100 000.
pub(crate) fn wanted(n: u64) -> bool {
    match std::env::var("IMPORT_BASELINE").as_deref() {
        Ok("0") => false,
        Ok("all") => true,
        _ => n <= 100_000,
    }
}

/// The baseline's binary, built first if it is not there yet.
pub(crate) fn binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("import-baseline");
    let bin = target.join("release").join("user-sync");
    if bin.exists() {
        eprintln!("baseline: {} (built before)", bin.display());
        return bin;
    }
    let tree = std::env::temp_dir().join(format!("usync-baseline-{}", std::process::id()));
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "git {}", args.join(" "));
    };
    let tree_str = tree.to_str().expect("a UTF-8 temp dir");
    git(&["worktree", "add", "--detach", tree_str, COMMIT]);
    eprintln!(
        "baseline: building {COMMIT} in release into {} (minutes)",
        target.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--release", "--locked", "--bin", "user-sync"])
        .current_dir(&tree)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .is_ok_and(|s| s.success());
    git(&["worktree", "remove", "--force", tree_str]);
    assert!(
        built && bin.exists(),
        "the baseline ({COMMIT}) did not build"
    );
    bin
}
