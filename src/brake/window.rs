//! The brake's pure part: a sliding window over recent deactivations, whether the brake
//! holds, and which deactivations of a batch go ahead. No I/O.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Window {
    limit: u32,
    span: Duration,
    recent: VecDeque<(Instant, u32)>,
}

impl Window {
    pub fn new(limit: u32, span: Duration) -> Self {
        Self {
            limit,
            span,
            recent: VecDeque::new(),
        }
    }

    /// How many more deactivations fit in the window at `now`.
    pub fn room(&mut self, now: Instant) -> usize {
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= self.span)
        {
            self.recent.pop_front();
        }
        let used: u64 = self.recent.iter().map(|(_, n)| u64::from(*n)).sum();
        u64::from(self.limit).saturating_sub(used) as usize
    }

    pub fn record(&mut self, now: Instant, deactivations: u32) {
        // Forget what has left the window, so memory stays bounded whatever the traffic.
        self.room(now);
        if deactivations > 0 {
            self.recent.push_back((now, deactivations));
        }
    }

    pub fn clear(&mut self) {
        self.recent.clear();
    }
}

/// Whether the brake holds, and under which `brake_log` entry once that is written (the
/// entry is written in the background: the decision must not wait on the database).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engaged {
    No,
    Yes { logged: Option<i64> },
}

/// The brake of one worker: its window, whether it holds, the releases it has seen.
#[derive(Debug)]
pub(crate) struct State {
    pub window: Window,
    pub engaged: Engaged,
    /// Tokens of releases found in `brake_log`, so each is looked up once.
    pub releases: HashSet<String>,
}

impl State {
    pub fn new(limit: u32, span: Duration) -> Self {
        Self {
            window: Window::new(limit, span),
            engaged: Engaged::No,
            releases: HashSet::new(),
        }
    }

    /// Splits the deactivating users of a batch (in batch order) into those that may go
    /// ahead and those to hold: none go ahead while engaged.
    pub fn admit(&mut self, now: Instant, deactivating: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let room = match self.engaged {
            Engaged::No => self.window.room(now),
            Engaged::Yes { .. } => 0,
        };
        let cut = room.min(deactivating.len());
        (deactivating[..cut].to_vec(), deactivating[cut..].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_admits_up_to_the_limit_then_forgets_old_deactivations() {
        let t0 = Instant::now();
        let mut w = Window::new(500, Duration::from_secs(300));
        assert_eq!(w.room(t0), 500);
        w.record(t0, 300);
        w.record(t0 + Duration::from_secs(100), 150);
        assert_eq!(w.room(t0 + Duration::from_secs(200)), 50);
        assert_eq!(
            w.room(t0 + Duration::from_secs(300)),
            350,
            "the first 300 expired"
        );
        assert_eq!(w.room(t0 + Duration::from_secs(400)), 500);
    }

    #[test]
    fn the_deactivation_past_the_limit_is_held_and_all_after_it_while_engaged() {
        let t0 = Instant::now();
        let mut b = State::new(3, Duration::from_secs(60));
        b.window.record(t0, 2);
        let (go, hold) = b.admit(t0, &[10, 11, 12]);
        assert_eq!((go, hold), (vec![10], vec![11, 12]));
        b.engaged = Engaged::Yes { logged: Some(1) };
        let later = t0 + Duration::from_secs(120);
        assert_eq!(
            b.admit(later, &[13]),
            (vec![], vec![13]),
            "engaged holds everything"
        );
        b.engaged = Engaged::No;
        assert_eq!(b.admit(later, &[13]), (vec![13], vec![]));
    }
}
