//! Permits that say when one is given back: the process's CoMagic call slots and each tenant's
//! allowance of batches in flight. A lane whose batch is past its linger waits for one to be free
//! while it keeps filling; with a thousand busy lanes, looking every few milliseconds was most of
//! deliver's CPU while CoMagic was slow, so a lane sleeps until a permit comes back instead.
//!
//! A permit given back while nobody queues for it wakes one waiter ([`Slots::freed`]), not all of
//! them: one free slot is one call, and a thousand lanes woken for it would close a thousand
//! half-full batches. A waiter woken that does not take the permit (the other thing it needs is
//! missing) passes the wake-up on ([`Slots::hand_on`]), so a free permit never waits unseen.

use std::sync::Arc;

use tokio::sync::{futures::Notified, AcquireError, Notify, Semaphore};

pub struct Slots {
    permits: Semaphore,
    capacity: usize,
    freed: Notify,
}

/// One permit, given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
}

impl Slots {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Slots { permits: Semaphore::new(capacity), capacity, freed: Notify::new() })
    }

    /// Waits for a permit, in turn with the others waiting here (fails only once closed, which
    /// these never are).
    pub async fn acquire(self: &Arc<Self>) -> Result<Slot, AcquireError> {
        self.permits.acquire().await?.forget();
        Ok(Slot { slots: self.clone() })
    }

    /// Permits free now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Completes when a permit is given back and nobody queued in [`Self::acquire`] takes it.
    /// Pin it and call `enable` before looking at [`Self::available`], so a permit given back in
    /// between is not missed.
    pub fn freed(&self) -> Notified<'_> {
        self.freed.notified()
    }

    /// Wakes the next waiter of [`Self::freed`] while a permit is free: called by a waiter that was
    /// woken and does not take it.
    pub fn hand_on(&self) {
        if self.available() > 0 {
            self.freed.notify_one();
        }
    }

    /// Waits until every permit has been given back (for a shutdown: call once nothing acquires).
    pub async fn all_given_back(&self) {
        let all = u32::try_from(self.capacity).unwrap_or(u32::MAX);
        let _all = self.permits.acquire_many(all).await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Given back first: the waiter woken must find it free.
        self.slots.permits.add_permits(1);
        self.slots.hand_on();
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::time::Duration;

    use super::Slots;

    #[tokio::test(start_paused = true)]
    async fn a_permit_given_back_wakes_one_waiter() {
        let slots = Slots::new(1);
        let held = slots.acquire().await.unwrap();
        let (mut first, mut second) = (pin!(slots.freed()), pin!(slots.freed()));
        first.as_mut().enable();
        second.as_mut().enable();
        drop(held);
        assert_eq!(slots.available(), 1);
        tokio::time::timeout(Duration::from_millis(1), first).await.expect("the first waiter is woken");
        let woken = tokio::time::timeout(Duration::from_millis(1), second.as_mut()).await;
        assert!(woken.is_err(), "one permit wakes one waiter");
        slots.hand_on();
        tokio::time::timeout(Duration::from_millis(1), second).await.expect("handed on while still free");
    }

    #[tokio::test(start_paused = true)]
    async fn a_permit_taken_by_a_queued_acquire_wakes_nobody() {
        let slots = Slots::new(1);
        let held = slots.acquire().await.unwrap();
        let queued = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire().await }
        });
        tokio::task::yield_now().await;
        let mut freed = pin!(slots.freed());
        freed.as_mut().enable();
        drop(held);
        let woken = tokio::time::timeout(Duration::from_millis(1), freed.as_mut()).await;
        assert!(woken.is_err(), "the permit went to the queued acquire");
        drop(queued.await.unwrap().unwrap());
        assert_eq!(slots.available(), 1);
        tokio::time::timeout(Duration::from_millis(1), freed).await.expect("given back by the queued one: free now");
        tokio::time::timeout(Duration::from_millis(1), slots.all_given_back()).await.expect("all back");
    }
}
