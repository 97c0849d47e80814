//! The real binary as a process: spawned with a test's settings and nothing else, its
//! output captured, bounded in time, its peak memory read.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `TEST_LOG=1`: the in-process worker logs through the test's output, and spawned
/// binaries show what the test does not read.
pub(crate) fn test_log() -> bool {
    std::env::var("TEST_LOG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Where a spawned binary's output goes that the test does not read: nowhere, or with
/// `TEST_LOG=1` to this process's own stream.
pub(crate) fn unread() -> Stdio {
    if test_log() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// The real binary with an empty environment (PATH aside) and no config file.
pub(crate) fn binary() -> Command {
    binary_at(Path::new(env!("CARGO_BIN_EXE_user-sync")))
}

/// `binary`, but the program at `program` (another release's build).
pub(crate) fn binary_at(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CONFIG_FILE", "/nonexistent/user-sync.toml")
        .current_dir(std::env::temp_dir());
    cmd
}

/// What a command of the real binary did.
pub(crate) struct Run {
    /// The exit code (-1 if a signal ended it).
    pub(crate) code: i32,
    pub(crate) success: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn of(out: std::process::Output) -> Self {
        let run = Self {
            code: out.status.code().unwrap_or(-1),
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if test_log() {
            // Shown with the output of a test that fails.
            eprint!("{}", run.stderr);
        }
        run
    }

    /// Fails the test, with the command's stderr, unless the command succeeded.
    pub(crate) fn ok(self) -> Self {
        assert!(self.success, "{}", self.stderr);
        self
    }

    /// stdout as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", self.stdout, self.stderr))
    }

    /// stdout, then stderr.
    pub(crate) fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs a command to its end with its output captured.
pub(crate) fn run(cmd: &mut Command) -> Run {
    Run::of(cmd.output().unwrap())
}

/// Runs a command to its end, failing the test if it takes longer than `limit` (the
/// process is killed first, so nothing is left running).
pub(crate) async fn run_within(cmd: Command, limit: Duration) -> Run {
    run_bounded(cmd, limit)
        .await
        .unwrap_or_else(|| panic!("command did not finish within {limit:?}"))
}

/// Runs a command to its end with its output captured, or `None` if it did not finish
/// within `limit` (it is killed then).
pub(crate) async fn run_bounded(mut cmd: Command, limit: Duration) -> Option<Run> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(limit, waiting).await {
        Ok(out) => Some(Run::of(out.unwrap().unwrap())),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            None
        }
    }
}

/// Runs `scripts/NAME ARGS`; its stdout, or the test fails with its stderr.
pub(crate) fn script(name: &str, args: &[&str]) -> String {
    let out = Command::new(script_path(name)).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} {args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn script_path(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Sends SIGTERM to a spawned binary.
pub(crate) fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM");
}

/// Runs `cmd` to its end; its exit code and peak resident memory in KiB, as the kernel's
/// high-water mark of the process's own memory (`VmHWM`, which starts afresh at exec),
/// read until it exits. (`wait4`'s `ru_maxrss` would include this test process's own
/// peak: the child runs on its parent's memory until exec.)
pub(crate) async fn peak_rss(mut cmd: std::process::Command) -> (i32, i64) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        let hwm = std::fs::read_to_string(&status).ok().and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<i64>().ok()
        });
        peak = peak.max(hwm.unwrap_or(0));
        if let Some(exit) = child.try_wait().unwrap() {
            return (exit.code().unwrap_or(-1), peak);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A spawned binary whose stdout and stderr are read while it runs (a full pipe would
/// stall it).
pub(crate) struct Draining {
    pid: u32,
    output: tokio::task::JoinHandle<std::process::Output>,
}

impl Draining {
    pub(crate) fn start(child: std::process::Child) -> Self {
        let pid = child.id();
        let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
        Self { pid, output }
    }

    /// Sends SIGTERM; returns stdout, then stderr, once the process exits, failing the
    /// test after `limit`.
    pub(crate) async fn stop(self, limit: Duration) -> String {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        let out = tokio::time::timeout(limit, self.output)
            .await
            .expect("the binary exits on SIGTERM")
            .unwrap();
        let (stdout, stderr) = (&out.stdout, &out.stderr);
        String::from_utf8_lossy(stdout).into_owned() + &String::from_utf8_lossy(stderr)
    }
}
