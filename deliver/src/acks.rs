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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bridge_shared::amqp::session;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use prometheus::IntCounterVec;
use tokio::time::Instant;

/// The longest an acked message waits for the ones below it before it is acked alone.
pub const LINGER: Duration = Duration::from_millis(250);

/// At most one in this many of a channel's prefetch may be acked and waiting. Half: on the scale
/// benchmark (20 tenants, 1–3 replicas) a quarter left acks waiting so rarely that they hardly
/// coalesced (1.6–2 messages a frame), while half coalesced 4–19 and kept batches at 47–50 items.
const WAITING_SHARE: usize = 2;

/// What goes on the wire, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// `basic.ack multiple`: this tag and every unacked one below it.
    AckUpTo(u64),
    /// `basic.ack` of this tag alone.
    Ack(u64),
    /// `basic.nack requeue` of this tag alone: the broker delivers it again.
    HandBack(u64),
}

impl Frame {
    fn label(self) -> &'static str {
        match self {
            Frame::AckUpTo(_) => "ack_multiple",
            Frame::Ack(_) => "ack",
            Frame::HandBack(_) => "nack",
        }
    }
}

/// The bookkeeping of one channel: which tags are in hand, which are acked and not yet sent.
#[derive(Debug)]
struct Window {
    /// Taken from the consumer and not settled yet.
    in_hand: BTreeSet<u64>,
    /// Acked, not yet sent, each with when it was acked.
    waiting: BTreeMap<u64, Instant>,
    /// The most that may wait: each counts against the channel's prefetch, and so takes the place
    /// of an event deliver could be batching.
    most_waiting: usize,
}

impl Window {
    fn new(most_waiting: usize) -> Self {
        Window { in_hand: BTreeSet::new(), waiting: BTreeMap::new(), most_waiting }
    }

    fn track(&mut self, tag: u64) {
        self.in_hand.insert(tag);
    }

    /// Acks `tags` (those still in hand; a tag settled before is left alone) and returns the frames
    /// now due.
    fn ack(&mut self, tags: impl IntoIterator<Item = u64>, now: Instant, linger: Duration) -> Vec<Frame> {
        for tag in tags {
            if self.in_hand.remove(&tag) {
                self.waiting.insert(tag, now);
            }
        }
        self.due(now, linger)
    }

    /// Hands `tag` back (if it is still in hand) and returns the frames now due.
    fn hand_back(&mut self, tag: u64, now: Instant, linger: Duration) -> Vec<Frame> {
        let mut frames = Vec::new();
        if self.in_hand.remove(&tag) {
            frames.push(Frame::HandBack(tag));
        }
        frames.extend(self.due(now, linger));
        frames
    }

    /// Every waiting tag below the lowest one in hand, in one frame; then, alone, each that has
    /// waited `linger` and the lowest ones beyond `most_waiting`.
    fn due(&mut self, now: Instant, linger: Duration) -> Vec<Frame> {
        let lowest_in_hand = self.in_hand.first().copied().unwrap_or(u64::MAX);
        let above = self.waiting.split_off(&lowest_in_hand);
        let below = std::mem::replace(&mut self.waiting, above);
        let mut frames: Vec<Frame> = below.last_key_value().map(|(&top, _)| Frame::AckUpTo(top)).into_iter().collect();
        self.waiting.retain(|&tag, &mut acked| {
            let overdue = now.duration_since(acked) >= linger;
            if overdue {
                frames.push(Frame::Ack(tag));
            }
            !overdue
        });
        while self.waiting.len() > self.most_waiting {
            let Some((tag, _)) = self.waiting.pop_first() else { break };
            frames.push(Frame::Ack(tag));
        }
        frames
    }

    fn holds(&self, tag: u64) -> bool {
        self.in_hand.contains(&tag)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const L: Duration = LINGER;

    fn window(tags: impl IntoIterator<Item = u64>) -> Window {
        let mut w = Window::new(100);
        tags.into_iter().for_each(|t| w.track(t));
        w
    }

    #[test]
    fn a_run_below_everything_in_hand_goes_as_one_multiple_ack() {
        let now = Instant::now();
        let mut w = window(1..=6);
        assert_eq!(w.ack([2, 3], now, L), vec![], "1 is in hand: 2 and 3 wait");
        assert_eq!(w.ack([5], now, L), vec![]);
        assert_eq!(w.ack([1], now, L), vec![Frame::AckUpTo(3)], "4 is in hand: 5 waits");
        assert_eq!(w.ack([4, 6], now, L), vec![Frame::AckUpTo(6)]);
        assert!(w.waiting.is_empty() && w.in_hand.is_empty());
    }

    #[test]
    fn a_tag_that_waited_the_linger_goes_alone() {
        let start = Instant::now();
        let mut w = window(1..=3);
        assert_eq!(w.ack([2], start, L), vec![]);
        assert_eq!(w.due(start + L / 2, L), vec![]);
        assert_eq!(w.due(start + L, L), vec![Frame::Ack(2)]);
        assert_eq!(w.ack([3], start + L, L), vec![]);
        assert_eq!(w.ack([1], start + L, L), vec![Frame::AckUpTo(3)], "2 was sent: 3 still covers only 1 and 3");
    }

    #[test]
    fn beyond_the_most_that_may_wait_the_lowest_go_alone() {
        let now = Instant::now();
        let mut w = window(1..=5);
        w.most_waiting = 2;
        assert_eq!(w.ack([2, 3, 4], now, L), vec![Frame::Ack(2)]);
        assert_eq!(w.ack([1], now, L), vec![Frame::AckUpTo(4)]);
    }

    #[test]
    fn a_hand_back_goes_alone_and_lets_the_run_above_it_go() {
        let now = Instant::now();
        let mut w = window(1..=3);
        assert_eq!(w.ack([2, 3], now, L), vec![]);
        assert_eq!(w.hand_back(1, now, L), vec![Frame::HandBack(1), Frame::AckUpTo(3)]);
    }

    #[test]
    fn a_tag_is_settled_once() {
        let now = Instant::now();
        let mut w = window([1]);
        assert_eq!(w.ack([1], now, L), vec![Frame::AckUpTo(1)]);
        assert_eq!(w.ack([1], now, L), vec![], "acked twice");
        assert_eq!(w.hand_back(1, now, L), vec![], "handed back after its ack");
        assert_eq!(w.ack([7], now, L), vec![], "never tracked");
    }

    #[test]
    fn draining_sends_everything_acked_and_nothing_in_hand() {
        let now = Instant::now();
        let mut w = window(1..=4);
        w.ack([2, 4], now, L);
        assert_eq!(w.due(now, Duration::ZERO), vec![Frame::Ack(2), Frame::Ack(4)]);
        assert!(w.holds(1) && w.holds(3));
    }

    /// What the broker holds unacked on a channel, replaying the frames as it would: a frame naming
    /// a tag it does not hold would close the channel.
    fn replay(broker: &mut BTreeSet<u64>, frames: &[Frame]) -> Result<Vec<u64>, String> {
        let mut acked = Vec::new();
        for frame in frames {
            match *frame {
                Frame::AckUpTo(tag) => {
                    if !broker.contains(&tag) {
                        return Err(format!("{frame:?}: unknown delivery tag"));
                    }
                    let rest = broker.split_off(&(tag + 1));
                    acked.extend(std::mem::replace(broker, rest));
                }
                Frame::Ack(tag) | Frame::HandBack(tag) => {
                    if !broker.remove(&tag) {
                        return Err(format!("{frame:?}: unknown delivery tag"));
                    }
                    if matches!(frame, Frame::Ack(_)) {
                        acked.push(tag);
                    }
                }
            }
        }
        Ok(acked)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        /// Whatever the order of settling: the broker is never told of a tag it does not hold,
        /// never acks a message still in hand or handed back, and, once drained, has acked exactly
        /// the messages deliver acked.
        #[test]
        fn coalesced_acks_settle_exactly_what_was_acked(
            settles in proptest::collection::vec((0u64..40, any::<bool>(), 0u64..400), 0..120),
        ) {
            let start = Instant::now();
            let mut w = window(0..40);
            let mut broker: BTreeSet<u64> = (0..40).collect();
            let (mut acked_by_us, mut acked_by_broker) = (BTreeSet::new(), BTreeSet::new());
            let mut elapsed = 0;
            for (tag, is_ack, ms) in settles {
                elapsed += ms;
                let now = start + Duration::from_millis(elapsed);
                let frames = if is_ack {
                    if w.holds(tag) {
                        acked_by_us.insert(tag);
                    }
                    w.ack([tag], now, L)
                } else {
                    w.hand_back(tag, now, L)
                };
                let acked = replay(&mut broker, &frames).map_err(TestCaseError::fail)?;
                for tag in acked {
                    prop_assert!(acked_by_us.contains(&tag), "acked {} which deliver did not ack", tag);
                    acked_by_broker.insert(tag);
                }
                for tag in &w.in_hand {
                    prop_assert!(broker.contains(tag), "{} is in hand but settled", tag);
                }
            }
            let frames = w.due(start + Duration::from_millis(elapsed), Duration::ZERO);
            acked_by_broker.extend(replay(&mut broker, &frames).map_err(TestCaseError::fail)?);
            prop_assert_eq!(acked_by_broker, acked_by_us);
        }
    }
}
