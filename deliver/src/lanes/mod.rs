//! One lane per integration and kind: it gathers events into batches of up to `batch_max`, flushed
//! when full or after `batch_linger`, and sends each batch under a global concurrency limit.
//!
//! Isolation: all lanes share one queue and one prefetch window, so a lane that cannot keep up (a
//! slow account, a quota wait) must not fill the window. A lane that holds more than a couple of
//! batches and is behind (its last batch waited longer than `max_lag` to be sent) parks its new
//! arrivals in the shortest retry queue instead, and the other tenants' events keep flowing. A
//! busy lane that keeps up is never parked: parking is churn for the broker.
//!
//! A tenant never holds every CoMagic call slot: its chat and offline lanes share one allowance of
//! [`per_tenant_limit`] batches in flight, which keeps some slots free for the other tenants, so
//! one account that answers slowly (or not at all until the timeout) cannot make everyone else
//! wait. A batch takes one of the global slots only while its call is on the wire
//! ([`Courier`]'s `calls`), so a tenant waiting for its quota to reset holds none. When a batch is
//! closed is [`gather`]'s business.

mod gather;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bridge_shared::event::EventKind;
use bridge_shared::lifecycle::panic_message;
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::gather::{gather, Gate};
use crate::acks::Ticket;
use crate::courier::Courier;
use crate::pending::Pending;
use crate::slots::Slots;

/// A batch stops growing once its events reach this many bytes: fifty 1 MiB dialogs in one
/// request would be a 50 MiB upload (CoMagic documents no limit; no sane API takes that).
pub const MAX_BATCH_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy)]
pub struct LaneLimits {
    pub batch_max: usize,
    pub linger: Duration,
    /// How far behind a lane may fall before its arrivals are parked.
    pub max_lag: Duration,
}

/// Batches one tenant may have in flight: all but an eighth of the call slots (at least one kept
/// for the others once there are two).
pub fn per_tenant_limit(concurrency: usize) -> usize {
    let reserved = (concurrency / 8).max(1);
    concurrency.saturating_sub(reserved).max(1)
}

struct Lane {
    tx: mpsc::UnboundedSender<(Instant, Pending)>,
    in_hand: Arc<AtomicUsize>,
    /// How long the last batch's first event waited in the lane, in ms.
    lag_ms: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

pub struct Lanes {
    lanes: Mutex<HashMap<(String, EventKind), Lane>>,
    /// Each tenant's allowance of batches in flight, shared by its lanes.
    allowances: Mutex<HashMap<String, Arc<Slots>>>,
    courier: Arc<Courier>,
    concurrency: usize,
    limits: LaneLimits,
}

impl Lanes {
    /// `concurrency` is the number of CoMagic call slots (the courier's `calls`).
    pub fn new(courier: Arc<Courier>, concurrency: usize, limits: LaneLimits) -> Self {
        Lanes { lanes: Mutex::default(), allowances: Mutex::default(), courier, concurrency, limits }
    }

    pub fn submit(&self, pending: Pending) {
        let key = (pending.envelope.integration.clone(), pending.kind());
        let (tx, in_hand, lag_ms) = {
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            let lane = lanes.entry(key).or_insert_with_key(|(id, kind)| self.open(id.clone(), *kind));
            (lane.tx.clone(), lane.in_hand.clone(), lane.lag_ms.clone())
        };
        let behind = Duration::from_millis(lag_ms.load(Ordering::Relaxed)) > self.limits.max_lag;
        if behind && in_hand.load(Ordering::Relaxed) >= 2 * self.limits.batch_max {
            let outlet = self.courier.outlet.clone();
            tokio::spawn(async move { outlet.park(pending, Duration::ZERO).await });
            return;
        }
        in_hand.fetch_add(1, Ordering::Relaxed);
        // A send fails only while shutting down; the unacked delivery then returns to the queue.
        let _ = tx.send((Instant::now(), pending));
    }

    fn allowance(&self, integration: &str) -> Arc<Slots> {
        let mut all = self.allowances.lock().unwrap_or_else(PoisonError::into_inner);
        let limit = per_tenant_limit(self.concurrency);
        all.entry(integration.to_owned()).or_insert_with(|| Slots::new(limit)).clone()
    }

    fn open(&self, integration: String, kind: EventKind) -> Lane {
        let (tx, rx) = mpsc::unbounded_channel();
        let in_hand = Arc::new(AtomicUsize::new(0));
        let lag_ms = Arc::new(AtomicU64::new(0));
        let lane = LaneTask {
            gate: Gate { allowance: self.allowance(&integration), calls: self.courier.calls.clone() },
            integration,
            kind,
            in_hand: in_hand.clone(),
            lag_ms: lag_ms.clone(),
            courier: self.courier.clone(),
            limits: self.limits,
        };
        Lane { tx, in_hand, lag_ms, task: tokio::spawn(lane.run(rx)) }
    }

    /// Flushes every lane, waits for the batches in flight, sends the acks still waiting to be
    /// coalesced and closes the consuming channels (call once nothing is submitted).
    pub async fn close(&self) {
        let lanes: Vec<Lane> =
            self.lanes.lock().unwrap_or_else(PoisonError::into_inner).drain().map(|(_, lane)| lane).collect();
        for lane in lanes {
            drop(lane.tx);
            let _ = lane.task.await;
        }
        // Every batch in flight holds one of its tenant's allowance until it has settled.
        let allowances: Vec<_> =
            self.allowances.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        for allowance in allowances {
            allowance.all_given_back().await;
        }
        self.courier.outlet.acks.close().await;
    }
}

struct LaneTask {
    integration: String,
    kind: EventKind,
    in_hand: Arc<AtomicUsize>,
    lag_ms: Arc<AtomicU64>,
    courier: Arc<Courier>,
    /// The tenant's allowance and the call slots a closed batch needs.
    gate: Gate,
    limits: LaneLimits,
}

impl LaneTask {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<(Instant, Pending)>) {
        while let Some((queued_at, first)) = rx.recv().await {
            let batch = gather(&mut rx, first, &self.limits, &self.gate).await;
            let Ok(allowed) = self.gate.allowance.acquire().await else { return };
            self.lag_ms.store(queued_at.elapsed().as_millis() as u64, Ordering::Relaxed);
            let (courier, in_hand, integration, kind) =
                (self.courier.clone(), self.in_hand.clone(), self.integration.clone(), self.kind);
            tokio::spawn(async move {
                let n = batch.len();
                let tickets: Vec<Ticket> = batch.iter().map(|p| p.message.ticket.clone()).collect();
                // A panic must not strand the batch unacked nor leave the lane counting it in hand.
                if let Err(panic) = AssertUnwindSafe(courier.deliver(&integration, kind, batch)).catch_unwind().await {
                    courier.outlet.hand_back_after_panic("lane", &tickets, panic_message(&*panic)).await;
                }
                in_hand.fetch_sub(n, Ordering::Relaxed);
                drop(allowed);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::per_tenant_limit;

    #[test]
    fn a_tenant_leaves_call_slots_for_the_others() {
        assert_eq!(per_tenant_limit(16), 14);
        assert_eq!(per_tenant_limit(8), 7);
        assert_eq!(per_tenant_limit(2), 1);
        assert_eq!(per_tenant_limit(1), 1, "one slot cannot be shared out");
        assert_eq!(per_tenant_limit(64), 56);
    }
}
