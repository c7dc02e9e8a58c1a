//! The bookkeeping of one channel's acknowledgements, apart from the wire: which tags are in hand,
//! which are acked and waiting for the ones below them, and which frames settle them (pure, so
//! its ordering rules are tested without a broker).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

/// What goes on the wire, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Frame {
    /// `basic.ack multiple`: this tag and every unacked one below it.
    AckUpTo(u64),
    /// `basic.ack` of this tag alone.
    Ack(u64),
    /// `basic.nack requeue` of this tag alone: the broker delivers it again.
    HandBack(u64),
}

impl Frame {
    pub(super) fn label(self) -> &'static str {
        match self {
            Frame::AckUpTo(_) => "ack_multiple",
            Frame::Ack(_) => "ack",
            Frame::HandBack(_) => "nack",
        }
    }
}

/// The bookkeeping of one channel: which tags are in hand, which are acked and not yet sent.
#[derive(Debug)]
pub(super) struct Window {
    /// Taken from the consumer and not settled yet.
    in_hand: BTreeSet<u64>,
    /// Acked, not yet sent, each with when it was acked.
    waiting: BTreeMap<u64, Instant>,
    /// The most that may wait: each counts against the channel's prefetch, and so takes the place
    /// of an event deliver could be batching.
    most_waiting: usize,
}

impl Window {
    pub(super) fn new(most_waiting: usize) -> Self {
        Window { in_hand: BTreeSet::new(), waiting: BTreeMap::new(), most_waiting }
    }

    pub(super) fn track(&mut self, tag: u64) {
        self.in_hand.insert(tag);
    }

    /// Acks `tags` (those still in hand; a tag settled before is left alone) and returns the frames
    /// now due.
    pub(super) fn ack(&mut self, tags: impl IntoIterator<Item = u64>, now: Instant, linger: Duration) -> Vec<Frame> {
        for tag in tags {
            if self.in_hand.remove(&tag) {
                self.waiting.insert(tag, now);
            }
        }
        self.due(now, linger)
    }

    /// Hands `tag` back (if it is still in hand) and returns the frames now due.
    pub(super) fn hand_back(&mut self, tag: u64, now: Instant, linger: Duration) -> Vec<Frame> {
        let mut frames = Vec::new();
        if self.in_hand.remove(&tag) {
            frames.push(Frame::HandBack(tag));
        }
        frames.extend(self.due(now, linger));
        frames
    }

    /// Every waiting tag below the lowest one in hand, in one frame; then, alone, each that has
    /// waited `linger` and the lowest ones beyond `most_waiting`.
    pub(super) fn due(&mut self, now: Instant, linger: Duration) -> Vec<Frame> {
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

    pub(super) fn holds(&self, tag: u64) -> bool {
        self.in_hand.contains(&tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acks::LINGER;
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
