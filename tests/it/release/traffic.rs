//! Live traffic for the mixed-version test: creates, updates and deletions of a few dozen
//! users at random times, some published twice, in random order, paced (about 150 a
//! second) so that releases can be swapped while it flows.

use crate::support::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

const USERS: u64 = 30;
const PER_TICK: usize = 6;
const TICK: Duration = Duration::from_millis(40);

/// xorshift64*: enough randomness for a stream, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    }
}

/// `events` random events as published: about one in six twice, the copy sent later.
pub(crate) fn stream(seed: u64, events: usize) -> Vec<serde_json::Value> {
    let mut rng = Rng(seed | 1);
    let mut out: Vec<serde_json::Value> = Vec::with_capacity(events * 7 / 6);
    for i in 0..events {
        let user = rng.next(USERS) as u8 + 1;
        let kind = [
            "user.created",
            "user.updated",
            "user.updated",
            "user.deleted",
        ][rng.next(4) as usize];
        let role = ["student", "student", "teacher"][rng.next(3) as usize];
        let services: &[&str] =
            [&["lms"][..], &["sat"], &["lms", "sat"], &[]][rng.next(4) as usize];
        let second = rng.next(3600);
        let ts = format!(
            "2024-01-01T{:02}:{:02}:{:02}Z",
            second / 3600,
            second / 60 % 60,
            second % 60
        );
        let mut e = event(kind, user, &ts, role, services);
        e["event_id"] = format!("event-{i}").into();
        e["user"]["is_active"] = (rng.next(5) > 0).into();
        e["user"]["first_name"] = ["Ann", "Bo", "Cy"][rng.next(3) as usize].into();
        if rng.next(6) == 0 && !out.is_empty() {
            let at = rng.next(out.len() as u64) as usize;
            out.insert(at, e.clone());
        }
        out.push(e);
    }
    out
}

/// The publishing task, and how many it has published.
pub(crate) struct Traffic {
    pub published: Arc<AtomicUsize>,
    pub total: usize,
    task: JoinHandle<()>,
}

impl Traffic {
    pub async fn start(env: &Env, events: Vec<serde_json::Value>) -> Self {
        let p = env.publisher().await;
        let published = Arc::new(AtomicUsize::new(0));
        let counter = published.clone();
        let total = events.len();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            for chunk in events.chunks(PER_TICK) {
                tick.tick().await;
                for e in chunk {
                    p.publish_json(e).await;
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Self {
            published,
            total,
            task,
        }
    }

    /// Waits until `share` (of 100) of the stream is published.
    pub async fn reached(&self, share: usize) {
        let target = self.total * share / 100;
        wait_for("traffic published", Duration::from_secs(60), || async {
            self.published.load(Ordering::SeqCst) >= target
        })
        .await;
    }

    /// Fails the test once the whole stream is out: a step meant to happen under live
    /// traffic came too late.
    pub fn assert_flowing(&self, step: &str) {
        let published = self.published.load(Ordering::SeqCst);
        assert!(
            published < self.total,
            "{step}: the stream ({} events) was already published",
            self.total
        );
        eprintln!("mixed versions: {step} at {published} of {}", self.total);
    }

    pub async fn finish(self) {
        tokio::time::timeout(Duration::from_secs(120), self.task)
            .await
            .expect("the stream is published within 2 minutes")
            .expect("the publisher did not fail");
    }
}
