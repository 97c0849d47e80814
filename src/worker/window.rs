//! The prefetch window sized in bytes: RabbitMQ bounds the deliveries a consumer holds by
//! count only (`prefetch_size` is refused), so the count is chosen from the bodies seen.
//!
//! A session starts with the window that fits `MAX_HELD_BYTES` when every body is at
//! `MAX_BODY_BYTES`. It narrows as soon as a body arrives that the window cannot hold
//! that many of, and widens toward `PREFETCH` once a whole window of deliveries has come
//! with small bodies only. What it cannot bound: the deliveries the broker sent before a
//! narrowing took effect (up to the window in force, at their size), and a single body
//! over `MAX_BODY_BYTES`, received in full before it is dead-lettered (the broker's
//! `max_message_size` bounds that).

#[derive(Debug)]
pub(super) struct Window {
    budget: usize,
    prefetch: u16,
    current: u16,
    /// The largest body since the window was last set, and how many deliveries came.
    largest: usize,
    seen: usize,
}

impl Window {
    pub fn new(budget: usize, max_body: usize, prefetch: u16) -> Self {
        let mut window = Self {
            budget,
            prefetch,
            current: 0,
            largest: 0,
            seen: 0,
        };
        window.set(window.fit(max_body));
        window
    }

    /// The count of bodies of `body` bytes that fit the budget, within 1..=`PREFETCH`.
    fn fit(&self, body: usize) -> u16 {
        let n = self.budget / body.max(1);
        n.clamp(1, self.prefetch.into()) as u16
    }

    pub fn current(&self) -> u16 {
        self.current
    }

    pub fn observe(&mut self, body: usize) {
        self.largest = self.largest.max(body);
        self.seen += 1;
    }

    /// The window to change to, if any: narrower at once, wider only after a whole window
    /// of small bodies, so one small delivery among large ones does not widen it.
    pub fn wanted(&self) -> Option<u16> {
        let fits = self.fit(self.largest);
        let narrower = fits < self.current;
        let wider = fits > self.current && self.seen >= usize::from(self.current);
        (narrower || wider).then_some(fits)
    }

    pub fn set(&mut self, window: u16) {
        self.current = window;
        self.largest = 0;
        self.seen = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    #[test]
    fn starts_with_what_fits_at_the_body_limit() {
        assert_eq!(Window::new(16 * KIB * KIB, 256 * KIB, 6000).current(), 64);
        assert_eq!(Window::new(256 * KIB, 256 * KIB, 6000).current(), 1);
        assert_eq!(Window::new(4 << 30, 256 * KIB, 6000).current(), 6000);
    }

    #[test]
    fn widens_after_a_window_of_small_bodies_and_narrows_at_once() {
        let mut w = Window::new(16 * KIB * KIB, 256 * KIB, 6000);
        for _ in 0..63 {
            w.observe(KIB);
        }
        assert_eq!(w.wanted(), None, "not a whole window yet");
        w.observe(KIB);
        assert_eq!(w.wanted(), Some(6000));
        w.set(6000);
        w.observe(KIB);
        assert_eq!(w.wanted(), None);
        w.observe(128 * KIB);
        assert_eq!(w.wanted(), Some(128));
        w.set(128);
        w.observe(300 * KIB * KIB);
        assert_eq!(w.wanted(), Some(1), "a body over the budget: one at a time");
    }

    #[test]
    fn a_large_body_in_the_window_keeps_it_narrow() {
        let mut w = Window::new(16 * KIB * KIB, 256 * KIB, 6000);
        w.observe(256 * KIB);
        for _ in 0..100 {
            w.observe(KIB);
        }
        assert_eq!(w.wanted(), None);
    }
}
