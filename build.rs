//! Embedded migrations (sqlx::migrate!) must trigger a rebuild when a file is added, and
//! the build names the revision it was made from (`--version`, `user_sync_build_info`).
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=USER_SYNC_REVISION");
    println!("cargo:rustc-env=USER_SYNC_REVISION={}", revision());
}

/// The commit of a git checkout; else `USER_SYNC_REVISION` (an image build, where .git is
/// not sent: the Dockerfile's build argument); else `unknown`.
fn revision() -> String {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    // Only this package's own .git: an exported tree inside another checkout (the previous
    // release built under target/) must not take that checkout's revision.
    if root.join(".git").exists()
        && let Some(head) = git(&root, &["rev-parse", "--short=12", "HEAD"])
    {
        watch_head(&root);
        return head;
    }
    std::env::var("USER_SYNC_REVISION")
        .ok()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Rebuilds when HEAD moves: HEAD itself (a checkout) and the branch it points at (a
/// commit), loose or packed. Paths through `--git-path`, which knows worktrees.
fn watch_head(root: &Path) {
    let mut files = vec!["HEAD".to_string(), "packed-refs".to_string()];
    files.extend(git(root, &["symbolic-ref", "-q", "HEAD"]));
    for file in files {
        if let Some(path) = git(root, &["rev-parse", "--git-path", &file]) {
            let path = root.join(path);
            // A path that does not exist would rerun this script at every build.
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}
