//! A release's binary run as a worker with a test environment's settings, its output in a
//! file of its own (a pipe nobody reads would fill and stall it).

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running worker; killed if the test ends without stopping it.
pub(crate) struct Process {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    pub fn start(name: &str, program: &Path, env: &Env) -> Self {
        let log = std::env::temp_dir().join(format!("{}.{name}.log", env.db.name));
        let file = std::fs::File::create(&log).unwrap();
        let child = env
            .binary_at(program)
            .arg("run")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {} does not start: {e}", program.display()));
        Self {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// The last lines it logged.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Fails the test if it has exited.
    pub fn assert_running(&mut self) {
        let status = self.child.as_mut().unwrap().try_wait().unwrap();
        assert!(
            status.is_none(),
            "{} exited ({status:?}):\n{}",
            self.name,
            self.tail()
        );
    }

    /// SIGTERM; it must exit 0 within 15 s. Returns how many events it logged a decision
    /// for.
    pub async fn stop(mut self) -> usize {
        self.assert_running();
        let mut child = self.child.take().unwrap();
        sigterm(&child);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                panic!("{} did not stop within 15 s:\n{}", self.name, self.tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            status.success(),
            "{} exited {status:?}:\n{}",
            self.name,
            self.tail()
        );
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().filter(|l| l.contains("\"decision\":")).count()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("{} logged last:\n{}", self.name, self.tail());
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
