//! The batches in flight take turns at two points, in delivery order.
//!
//! The brake: its window is admitted per batch, and "the deactivations past the threshold
//! and every one after them are held" must mean the same with two batches in flight as
//! with one. Were the later batch admitted first, it could take the room of an earlier one
//! and apply deactivations that came after ones the brake then holds. So a batch passes
//! the brake only after the batch before it has.
//!
//! The users: two batches in flight mostly name some users in common (a few dozen of a
//! thousand, for a stream over 25 000 users). The later batch's guard would wait on the
//! earlier one's row locks from its first shared user on, so its database work would start
//! only once the earlier batch committed. Instead, when it passes the brake, a batch learns
//! which users the batches before it may still be applying: it applies its other users at
//! once, beside them, and those users in a transaction of their own once every batch
//! before it has applied.

use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

/// A batch before that may still be applying: its users, and whether it has applied
/// (closed if it was dropped: its session ends and nothing after it is acknowledged, so it
/// is not waited for).
#[derive(Clone)]
struct Applying {
    users: Arc<HashSet<Uuid>>,
    done: watch::Receiver<bool>,
}

impl Applying {
    fn is_done(&self) -> bool {
        *self.done.borrow() || self.done.has_changed().is_err()
    }
}

/// A batch's place in the line.
pub(crate) struct Gate {
    after: Option<oneshot::Receiver<Vec<Applying>>>,
    ahead: Vec<Applying>,
    pass: Option<oneshot::Sender<Vec<Applying>>>,
    applied: watch::Sender<bool>,
}

/// Hands out gates in delivery order.
#[derive(Default)]
pub(crate) struct Line {
    last: Option<oneshot::Receiver<Vec<Applying>>>,
}

impl Line {
    pub fn next(&mut self) -> Gate {
        let (pass, after) = oneshot::channel();
        Gate {
            after: self.last.replace(after),
            ahead: Vec::new(),
            pass: Some(pass),
            applied: watch::channel(false).0,
        }
    }
}

impl Gate {
    /// Waits until the batch before has passed the brake, or has been dropped.
    pub async fn wait(&mut self) {
        if let Some(before) = self.after.as_mut() {
            self.ahead = before.await.unwrap_or_default();
            self.ahead.retain(|a| !a.is_done());
            self.after = None;
        }
    }

    /// Whether a batch before this one may still be applying `user`.
    pub fn ahead_of(&self, user: &Uuid) -> bool {
        self.ahead.iter().any(|a| a.users.contains(user))
    }

    /// Lets the next batch through, telling it which users this batch and those still
    /// applying before it are applying.
    pub fn pass(&mut self, users: HashSet<Uuid>) {
        let Some(pass) = self.pass.take() else {
            return;
        };
        let mut applying: Vec<Applying> = self.ahead.clone();
        applying.retain(|a| !a.is_done());
        applying.push(Applying {
            users: Arc::new(users),
            done: self.applied.subscribe(),
        });
        let _ = pass.send(applying);
    }

    /// Whether a batch before this one may still be applying.
    pub fn waits(&self) -> bool {
        self.ahead.iter().any(|a| !a.is_done())
    }

    /// Waits until every batch before has applied.
    pub async fn ahead_applied(&mut self) {
        for a in &mut self.ahead {
            let _ = a.done.wait_for(|done| *done).await;
        }
    }

    /// This batch has applied.
    pub fn applied(&self) {
        self.applied.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn users(ids: &[u8]) -> HashSet<Uuid> {
        ids.iter().map(|&i| Uuid::from_bytes([i; 16])).collect()
    }

    #[tokio::test]
    async fn each_gate_opens_after_the_one_before_passes_or_is_dropped() {
        let mut line = Line::default();
        let (mut first, mut second, mut third) = (line.next(), line.next(), line.next());
        first
            .wait()
            .now_or_never()
            .expect("the first waits for nobody");
        assert!(
            second.wait().now_or_never().is_none(),
            "the first has not passed"
        );
        first.pass(users(&[1]));
        second.wait().await;
        drop(second);
        third
            .wait()
            .now_or_never()
            .expect("a dropped gate lets the next through");
    }

    #[tokio::test]
    async fn a_batch_learns_the_users_still_applying_before_it_until_they_have() {
        let id = |i: u8| Uuid::from_bytes([i; 16]);
        let mut line = Line::default();
        let (mut a, mut b, mut c) = (line.next(), line.next(), line.next());
        a.wait().await;
        a.pass(users(&[1, 2]));
        b.wait().await;
        assert!(b.ahead_of(&id(2)) && !b.ahead_of(&id(3)));
        b.pass(users(&[3]));
        c.wait().await;
        assert!([1, 2, 3].iter().all(|&u| c.ahead_of(&id(u))));
        b.applied();
        assert!(
            c.ahead_applied().now_or_never().is_none(),
            "a still applies"
        );
        a.applied();
        c.ahead_applied().await;
        let mut d = line.next();
        c.pass(users(&[4]));
        d.wait().await;
        assert!(
            !d.ahead_of(&id(1)) && d.ahead_of(&id(4)),
            "applied batches drop out"
        );
        drop(c);
        d.ahead_applied()
            .now_or_never()
            .expect("a dropped batch is not waited for");
    }
}
