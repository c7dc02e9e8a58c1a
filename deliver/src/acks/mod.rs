//! Acknowledgements, coalesced per channel.
//!
//! Settling a message of a quorum queue is a Raft command that every member writes and applies: one
//! `basic.ack` per message cost the 3-node cluster about 107 µs of CPU per message, one
//! `basic.ack multiple` per 50 about 33 µs (the cluster's consume side, measured with a plain
//! client). Batches of 20 tenants interleave on one channel, so an ack of one batch can rarely name
//! a contiguous run; instead, each acked tag waits here until every tag below it is settled, and
//! the run goes out as one `multiple` ack. A tag that has waited [`LINGER`] (a tag below it is in a
//! slow batch) is sent alone, so coalescing never holds a settled message for longer than that.
//!
//! A `multiple` ack settles every unacked tag up to its own on the channel, so it must never cover
//! a tag still in hand. That holds because a channel's tags reach the [`AckWindow`] in order (one
//! consumer per channel, each delivery tracked as it leaves the stream, before anything can settle
//! it), and because frames are decided and written under one lock, in order: a `multiple` ack whose
//! own tag the broker already settled would close the channel.

mod window;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bridge_shared::amqp::session;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use prometheus::IntCounterVec;
use tokio::time::Instant;

use self::window::{Frame, Window};

/// The longest an acked message waits for the ones below it before it is acked alone.
pub const LINGER: Duration = Duration::from_millis(250);

/// At most one in this many of a channel's prefetch may be acked and waiting. Half: on the scale
/// benchmark (20 tenants, 1–3 replicas) a quarter left acks waiting so rarely that they hardly
/// coalesced (1.6–2 messages a frame), while half coalesced 4–19 and kept batches at 47–50 items.
const WAITING_SHARE: usize = 2;

/// One consuming channel's acknowledgements.
pub struct AckWindow {
    channel: Channel,
    window: Mutex<Window>,
    /// Held from deciding frames until they are written, so that they reach the broker in the
    /// order they were decided in.
    wire: tokio::sync::Mutex<()>,
    frames_sent: IntCounterVec,
}

impl AckWindow {
    /// Starts tracking a delivery of this window's channel. Call in the order the consumer yields
    /// them, before anything may settle it.
    pub fn track(self: &Arc<Self>, delivery: Delivery) -> Message {
        let tag = delivery.delivery_tag;
        self.lock().track(tag);
        Message { delivery, ticket: Ticket { window: self.clone(), tag } }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides the frames under the wire lock and writes them before releasing it.
    async fn settle(&self, decide: impl FnOnce(&mut Window, Instant) -> Vec<Frame>) {
        let _wire = self.wire.lock().await;
        let frames = decide(&mut self.lock(), Instant::now());
        for frame in frames {
            let sent = match frame {
                Frame::AckUpTo(tag) => self.channel.basic_ack(tag, BasicAckOptions { multiple: true }).await,
                Frame::Ack(tag) => self.channel.basic_ack(tag, BasicAckOptions { multiple: false }).await,
                Frame::HandBack(tag) => {
                    let options = BasicNackOptions { multiple: false, requeue: true };
                    self.channel.basic_nack(tag, options).await
                }
            };
            if let Err(error) = sent {
                // The channel is gone, and with it everything unacked: the broker delivers it again
                // (the ledger and the in-doubt check catch what was delivered).
                tracing::debug!(%error, "could not settle messages; the broker will redeliver them");
                return;
            }
            self.frames_sent.with_label_values(&[frame.label()]).inc();
        }
    }

    async fn ack(&self, tags: Vec<u64>) {
        self.settle(|window, now| window.ack(tags, now, LINGER)).await
    }

    /// What is overdue, or everything acked (`linger` zero, at shutdown).
    async fn flush(&self, linger: Duration) {
        self.settle(|window, now| window.due(now, linger)).await
    }
}

/// Every consuming channel's window, so that shutdown can send what waits in any of them.
pub struct Acks {
    /// Held here, not only by their messages: a window's channel must be closed by [`Acks::close`]
    /// before the connection is, not by lapin when the last message is dropped, which would race
    /// with the connection's close.
    windows: Mutex<Vec<Arc<AckWindow>>>,
    frames_sent: IntCounterVec,
}

impl Acks {
    /// `frames_sent` counts frames by `frame` (`ack_multiple`, `ack`, `nack`).
    pub fn new(frames_sent: IntCounterVec) -> Self {
        Acks { windows: Mutex::default(), frames_sent }
    }

    /// A window for a new consuming channel whose prefetch is `prefetch`, with a task that sends its
    /// overdue acks while the channel is open.
    pub fn open(&self, channel: Channel, prefetch: u16) -> Arc<AckWindow> {
        let window = Arc::new(AckWindow {
            channel,
            window: Mutex::new(Window::new(usize::from(prefetch) / WAITING_SHARE)),
            wire: tokio::sync::Mutex::new(()),
            frames_sent: self.frames_sent.clone(),
        });
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        // Those of an earlier session: their channels died with it.
        windows.retain(|w| w.channel.status().connected());
        windows.push(window.clone());
        let weak = Arc::downgrade(&window);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LINGER / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(window) = weak.upgrade().filter(|w| w.channel.status().connected()) else { return };
                window.flush(LINGER).await;
            }
        });
        window
    }

    /// At shutdown, once nothing more is settled: sends every ack still waiting, on every channel,
    /// and closes the channels.
    pub async fn close(&self) {
        let windows = std::mem::take(&mut *self.windows.lock().unwrap_or_else(PoisonError::into_inner));
        for window in windows {
            window.flush(Duration::ZERO).await;
            session::close_channel(&window.channel, "shutdown").await;
        }
    }
}

/// A consumed message, settled through its channel's window.
pub struct Message {
    pub delivery: Delivery,
    pub ticket: Ticket,
}

/// Settles one message; cheap to clone (kept aside to hand a batch back after a panic).
#[derive(Clone)]
pub struct Ticket {
    window: Arc<AckWindow>,
    tag: u64,
}

impl Ticket {
    pub async fn ack(&self) {
        self.window.ack(vec![self.tag]).await
    }

    /// Acks several messages, in one frame where their channel allows.
    pub async fn ack_all<'a>(tickets: impl IntoIterator<Item = &'a Ticket>) {
        let mut by_window: Vec<(&Arc<AckWindow>, Vec<u64>)> = Vec::new();
        for ticket in tickets {
            match by_window.iter_mut().find(|(w, _)| Arc::ptr_eq(w, &ticket.window)) {
                Some((_, tags)) => tags.push(ticket.tag),
                None => by_window.push((&ticket.window, vec![ticket.tag])),
            }
        }
        for (window, tags) in by_window {
            window.ack(tags).await;
        }
    }

    /// Hands the message back to the broker, which delivers it again and counts the delivery.
    pub async fn hand_back(&self) {
        self.window.settle(|window, now| window.hand_back(self.tag, now, LINGER)).await
    }

    /// Whether it can still be settled: not yet settled, and its channel still open.
    pub fn unsettled(&self) -> bool {
        self.window.channel.status().connected() && self.window.lock().holds(self.tag)
    }
}
