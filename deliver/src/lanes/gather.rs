//! How a lane closes a batch: when it is full, or past `batch_linger` as soon as it could go on
//! the wire at once (its tenant has allowance left and a call slot is free). Until then it keeps
//! filling: fewer, fuller calls cost the tenant fewer points and send the same events no later.
//! A batch that waits is woken by its lane's next event or by a permit given back, never by a
//! clock: with a thousand lanes waiting on a slow CoMagic, looking every 5 ms cost more CPU than
//! the deliveries did.

use std::pin::pin;
use std::sync::Arc;

use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::time::Instant;

use super::{LaneLimits, MAX_BATCH_BYTES};
use crate::pending::Pending;
use crate::slots::Slots;

/// What a batch's bytes are counted from.
pub trait Weighed {
    fn bytes(&self) -> usize;
}

impl Weighed for Pending {
    fn bytes(&self) -> usize {
        self.message.delivery.data.len()
    }
}

/// What a batch closed now needs to go on the wire at once.
pub struct Gate {
    /// The tenant's allowance of batches in flight, shared by its lanes.
    pub allowance: Arc<Slots>,
    /// The process's CoMagic call slots (the courier's `calls`).
    pub calls: Arc<Slots>,
}

enum Waited<T> {
    /// A batch closed now would go at once.
    Sendable,
    /// The lane's next event, or `None` once the lane is closed.
    Next(Option<T>),
}

impl Gate {
    /// The first of the two with no permit free: what a batch waits for.
    fn missing(&self) -> Option<&Slots> {
        [&self.allowance, &self.calls].into_iter().map(|slots| &**slots).find(|slots| slots.available() == 0)
    }

    /// Waits until a batch could go at once or the next event comes, whichever is first.
    async fn sendable_or_next<T>(&self, rx: &mut mpsc::UnboundedReceiver<(Instant, T)>) -> Waited<T> {
        let mut woken_by: Option<&Slots> = None;
        loop {
            let Some(missing) = self.missing() else { return Waited::Sendable };
            // Woken for a permit it cannot use (the other one is missing): the next waiter may.
            if let Some(slots) = woken_by.take() {
                slots.hand_on();
            }
            let mut freed = pin!(missing.freed());
            freed.as_mut().enable();
            // Looked at again once listening, so a permit given back in between is not missed.
            if !self.missing().is_some_and(|now| std::ptr::eq(now, missing)) {
                continue;
            }
            tokio::select! {
                next = rx.recv() => return Waited::Next(next.map(|(_, event)| event)),
                () = freed => woken_by = Some(missing),
            }
        }
    }
}

/// A batch from `first` and what follows on `rx`: at most `batch_max` events and about
/// [`MAX_BATCH_BYTES`], closed as the module says.
pub async fn gather<T: Weighed>(
    rx: &mut mpsc::UnboundedReceiver<(Instant, T)>,
    first: T,
    limits: &LaneLimits,
    gate: &Gate,
) -> Vec<T> {
    let flush_at = Instant::now() + limits.linger;
    let mut lingered = false;
    let mut bytes = first.bytes();
    let mut batch = vec![first];
    while batch.len() < limits.batch_max && bytes < MAX_BATCH_BYTES {
        let next = match rx.try_recv() {
            Ok((_, event)) => Some(event),
            Err(TryRecvError::Disconnected) => None,
            Err(TryRecvError::Empty) if lingered => match gate.sendable_or_next(rx).await {
                Waited::Sendable => None,
                Waited::Next(event) => event,
            },
            Err(TryRecvError::Empty) => tokio::select! {
                next = rx.recv() => next.map(|(_, event)| event),
                () = tokio::time::sleep_until(flush_at) => {
                    lingered = true;
                    continue;
                }
            },
        };
        let Some(next) = next else { break };
        bytes += next.bytes();
        batch.push(next);
    }
    batch
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;
    use tokio::time::Instant;

    use super::{gather, Gate, Weighed};
    use crate::lanes::LaneLimits;
    use crate::slots::Slots;

    struct Event;

    impl Weighed for Event {
        fn bytes(&self) -> usize {
            1
        }
    }

    const LIMITS: LaneLimits =
        LaneLimits { batch_max: 3, linger: Duration::from_millis(10), max_lag: Duration::from_secs(5) };
    const PROMPTLY: Duration = Duration::from_millis(1);

    /// A lane's gathering as a task, with how many times it was polled (woken) so far.
    struct Lane {
        tx: mpsc::UnboundedSender<(Instant, Event)>,
        polls: Arc<AtomicUsize>,
        task: JoinHandle<usize>,
    }

    impl Lane {
        fn start(allowance: &Arc<Slots>, calls: &Arc<Slots>) -> Lane {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let gate = Gate { allowance: allowance.clone(), calls: calls.clone() };
            let polls = Arc::new(AtomicUsize::new(0));
            let mut gathering = Box::pin(async move { gather(&mut rx, Event, &LIMITS, &gate).await.len() });
            let counted = polls.clone();
            let task = tokio::spawn(std::future::poll_fn(move |cx| {
                counted.fetch_add(1, Ordering::Relaxed);
                gathering.as_mut().poll(cx)
            }));
            Lane { tx, polls, task }
        }

        fn send(&self) {
            self.tx.send((Instant::now(), Event)).unwrap();
        }

        fn polls(&self) -> usize {
            self.polls.load(Ordering::Relaxed)
        }

        async fn closed_promptly(self) -> usize {
            tokio::time::timeout(PROMPTLY, self.task).await.expect("the batch closes promptly").unwrap()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_past_its_linger_sleeps_until_a_call_slot_is_given_back() {
        let (allowance, calls) = (Slots::new(2), Slots::new(1));
        let on_the_wire = calls.acquire().await.unwrap();
        let lane = Lane::start(&allowance, &calls);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!lane.task.is_finished(), "no slot free: the batch keeps filling");
        // Its first poll and the linger's end; a lane looking every 5 ms was polled 200 times.
        assert!(lane.polls() <= 2, "woken {} times in a second with nothing to do", lane.polls());
        lane.send();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(lane.polls() <= 3, "woken {} times: once more for the event", lane.polls());
        drop(on_the_wire);
        assert_eq!(lane.closed_promptly().await, 2, "the event that came while it waited rides along");
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_allowance_given_back_wakes_its_waiting_batch() {
        let (allowance, calls) = (Slots::new(1), Slots::new(4));
        let in_flight = allowance.acquire().await.unwrap();
        let lane = Lane::start(&allowance, &calls);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!lane.task.is_finished() && lane.polls() <= 2, "the tenant has no allowance left: it waits, asleep");
        drop(in_flight);
        assert_eq!(lane.closed_promptly().await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_goes_at_its_linger_when_it_could_be_sent_now_or_when_full() {
        let (allowance, calls) = (Slots::new(1), Slots::new(1));
        let started = Instant::now();
        let lane = Lane::start(&allowance, &calls);
        tokio::time::sleep(LIMITS.linger).await;
        assert_eq!(lane.closed_promptly().await, 1);
        assert!(started.elapsed() < LIMITS.linger + PROMPTLY, "closed at its linger");

        let on_the_wire = calls.acquire().await.unwrap();
        let lane = Lane::start(&allowance, &calls);
        tokio::time::sleep(Duration::from_secs(1)).await;
        lane.send();
        lane.send();
        assert_eq!(lane.closed_promptly().await, 3, "full: it goes without a free slot");
        drop(on_the_wire);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_woken_for_a_slot_it_cannot_use_hands_it_on() {
        let calls = Slots::new(1);
        let (mine, theirs) = (Slots::new(1), Slots::new(1));
        let on_the_wire = calls.acquire().await.unwrap();
        // Both wait for the call slot, the first one first in turn.
        let first = Lane::start(&mine, &calls);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = Lane::start(&theirs, &calls);
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The first one's tenant spends its allowance meanwhile (its other lane).
        let other_lane = mine.acquire().await.unwrap();
        drop(on_the_wire);
        assert_eq!(second.closed_promptly().await, 1, "the slot the first could not use went on to the second");
        assert!(!first.task.is_finished(), "it waits for its allowance now");
        drop(other_lane);
        assert_eq!(first.closed_promptly().await, 1);
    }
}
