//! Cutting batches: up to `BATCH_SIZE` deliveries, no more than `BATCH_MAX_WAIT_MS` spent
//! collecting one. Each delivery keeps the instant it was taken, for the
//! delivery-to-commit latency.

use super::feed::Feed;
use lapin::message::Delivery;
use std::time::Duration;
use tokio::time::Instant;

/// How often a batch gathering behind one in flight takes what the consumer holds.
pub(super) const TOP_UP: Duration = Duration::from_millis(1);

pub(super) struct Cut {
    size: usize,
    max_wait: Duration,
    batch: Vec<(Delivery, Instant)>,
}

impl Cut {
    pub fn new(size: usize, max_wait: Duration) -> Self {
        Self {
            size,
            max_wait,
            batch: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.batch.len() >= self.size
    }

    /// When the batch must be handed on, full or not; `None` while it is empty.
    pub fn deadline(&self) -> Option<Instant> {
        self.batch.first().map(|(_, taken)| *taken + self.max_wait)
    }

    /// Adds `delivery` and whatever else the consumer already holds (see `top_up`).
    pub fn fill(&mut self, delivery: Delivery, feed: &mut Feed) -> lapin::Result<bool> {
        self.batch.push((delivery, Instant::now()));
        self.top_up(feed)
    }

    /// Adds what the consumer already holds, until the batch is full or its time is up.
    /// False once the consumer has ended.
    pub fn top_up(&mut self, feed: &mut Feed) -> lapin::Result<bool> {
        let deadline = self.deadline().unwrap_or_else(Instant::now);
        while !self.is_full() && Instant::now() < deadline {
            match feed.ready() {
                Some(Some(delivery)) => self.batch.push((delivery?, Instant::now())),
                Some(None) => return Ok(false),
                None => break,
            }
        }
        Ok(true)
    }

    /// Whether to hand the batch on now: it is full, its time is up, or nothing is in
    /// flight (`idle`). Idle, a batch goes as soon as no further delivery is ready, so
    /// light traffic waits for nothing. Behind a batch in flight it keeps filling instead:
    /// a batch cut at once would be a sliver of what the broker is still sending, and each
    /// transaction has a fixed cost.
    pub fn due(&self, idle: bool) -> bool {
        match self.deadline() {
            None => false,
            Some(deadline) => idle || self.is_full() || Instant::now() >= deadline,
        }
    }

    pub fn take(&mut self) -> Vec<(Delivery, Instant)> {
        std::mem::take(&mut self.batch)
    }
}
