//! The consumer behind its byte-sized window (`window`): a change of window is a new
//! consumer on the same channel, since `basic.qos` reaches only consumers created after it.
//!
//! The old consumer is cancelled first and read to its end: the broker sends nothing after
//! cancel-ok, and every delivery it sent before is taken into a batch, because one
//! `multiple` ack covers every delivery tag before it on the channel. Only then is the new
//! consumer registered.

use super::window::Window;
use crate::broker::Session;
use futures_util::{FutureExt, StreamExt};
use lapin::Consumer;
use lapin::message::Delivery;
use lapin::options::BasicCancelOptions;

pub(super) struct Feed<'a> {
    session: &'a Session,
    queue: &'a str,
    consumer: Consumer,
    window: Window,
    /// Set once our cancel is sent: the consumer's end is then a change of window.
    cancelled: bool,
    /// The cancelled consumer has yielded its last delivery: `adjust` registers the next.
    ended: bool,
}

impl<'a> Feed<'a> {
    pub async fn open(session: &'a Session, queue: &'a str, window: Window) -> lapin::Result<Self> {
        let consumer = session.consumer(queue, window.current()).await?;
        Ok(Self {
            session,
            queue,
            consumer,
            window,
            cancelled: false,
            ended: false,
        })
    }

    pub fn window(&self) -> u16 {
        self.window.current()
    }

    /// The next delivery; `None` at the consumer's end, ours (see `changing`) or the
    /// broker's. Cancel-safe: nothing but the stream is awaited.
    pub async fn next(&mut self) -> Option<lapin::Result<Delivery>> {
        let next = self.consumer.next().await;
        self.seen(next)
    }

    /// A delivery the consumer already holds, without waiting: `None` if there is none,
    /// and once a consumer we cancelled has ended.
    pub fn ready(&mut self) -> Option<Option<lapin::Result<Delivery>>> {
        if self.ended {
            return None;
        }
        let next = self.consumer.next().now_or_never()?;
        match self.seen(next) {
            None if self.ended => None,
            next => Some(next),
        }
    }

    /// Whether the consumer's end was ours, a change of window that `adjust` completes,
    /// rather than the broker's cancel.
    pub fn changing(&self) -> bool {
        self.ended
    }

    fn seen(&mut self, next: Option<lapin::Result<Delivery>>) -> Option<lapin::Result<Delivery>> {
        match &next {
            Some(Ok(delivery)) => self.window.observe(delivery.data.len()),
            None if self.cancelled => self.ended = true,
            _ => {}
        }
        next
    }

    /// Moves a change of window on: registers the next consumer once the cancelled one has
    /// ended, or cancels the consumer when the bodies seen call for another window (its
    /// remaining deliveries still come through `next`). Called outside any race, so that
    /// no request to the broker is dropped half-way.
    pub async fn adjust(&mut self) -> lapin::Result<()> {
        if self.ended {
            return self.reopen().await;
        }
        if self.cancelled || self.window.wanted().is_none() {
            return Ok(());
        }
        self.cancelled = true;
        let tag = self.consumer.tag();
        let options = BasicCancelOptions::default();
        self.session.consume.basic_cancel(tag, options).await
    }

    async fn reopen(&mut self) -> lapin::Result<()> {
        let window = self.window.wanted().unwrap_or(self.window.current());
        self.consumer = self.session.consumer(self.queue, window).await?;
        self.window.set(window);
        (self.cancelled, self.ended) = (false, false);
        tracing::debug!(window, "prefetch window changed");
        Ok(())
    }
}
