//! One lane per integration and kind: it gathers events into batches of up to `batch_max`, flushed
//! when full or after `batch_linger_ms`, and sends each batch under a global concurrency limit.
//!
//! Isolation: all lanes share one queue and one prefetch window, so a lane that cannot keep up (a
//! slow or paused account, a spent quota) must not fill the window. A lane holding `lane_cap`
//! events parks its new arrivals in the shortest retry queue instead; the other tenants' events
//! keep flowing through the window.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge_shared::event::EventKind;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::courier::Courier;
use crate::pending::Pending;

#[derive(Debug, Clone, Copy)]
pub struct LaneLimits {
    pub batch_max: usize,
    pub linger: Duration,
    /// Events one lane may hold (queued and in flight) before its arrivals are parked.
    pub lane_cap: usize,
}

struct Lane {
    tx: mpsc::UnboundedSender<Pending>,
    in_hand: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

pub struct Lanes {
    lanes: Mutex<HashMap<(String, EventKind), Lane>>,
    courier: Arc<Courier>,
    permits: Arc<Semaphore>,
    concurrency: usize,
    limits: LaneLimits,
}

impl Lanes {
    pub fn new(courier: Arc<Courier>, concurrency: usize, limits: LaneLimits) -> Self {
        Lanes { lanes: Mutex::default(), courier, permits: Arc::new(Semaphore::new(concurrency)), concurrency, limits }
    }

    pub fn submit(&self, pending: Pending) {
        let key = (pending.envelope.integration.clone(), pending.kind());
        let (tx, in_hand) = {
            let mut lanes = self.lanes.lock().unwrap();
            let lane = lanes.entry(key).or_insert_with_key(|(id, kind)| self.open(id.clone(), *kind));
            (lane.tx.clone(), lane.in_hand.clone())
        };
        if in_hand.load(Ordering::Relaxed) >= self.limits.lane_cap {
            let outlet = self.courier.outlet.clone();
            tokio::spawn(async move { outlet.park(pending, Duration::ZERO).await });
            return;
        }
        in_hand.fetch_add(1, Ordering::Relaxed);
        // A send fails only while shutting down; the unacked delivery then returns to the queue.
        let _ = tx.send(pending);
    }

    fn open(&self, integration: String, kind: EventKind) -> Lane {
        let (tx, rx) = mpsc::unbounded_channel();
        let in_hand = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run_lane(
            integration,
            kind,
            rx,
            in_hand.clone(),
            self.courier.clone(),
            self.permits.clone(),
            self.limits,
        ));
        Lane { tx, in_hand, task }
    }

    /// Flushes every lane and waits for the batches in flight (call once nothing is submitted).
    pub async fn close(&self) {
        let lanes: Vec<Lane> = self.lanes.lock().unwrap().drain().map(|(_, lane)| lane).collect();
        for lane in lanes {
            drop(lane.tx);
            let _ = lane.task.await;
        }
        let _ = self.permits.acquire_many(self.concurrency as u32).await;
    }
}

async fn run_lane(
    integration: String,
    kind: EventKind,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    in_hand: Arc<AtomicUsize>,
    courier: Arc<Courier>,
    permits: Arc<Semaphore>,
    limits: LaneLimits,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let flush_at = Instant::now() + limits.linger;
        while batch.len() < limits.batch_max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    p = rx.recv() => match p {
                        Some(p) => batch.push(p),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(flush_at) => break,
                },
            }
        }
        let permit = permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (courier, in_hand, integration) = (courier.clone(), in_hand.clone(), integration.clone());
        tokio::spawn(async move {
            let n = batch.len();
            courier.deliver(&integration, kind, batch).await;
            in_hand.fetch_sub(n, Ordering::Relaxed);
            drop(permit);
        });
    }
}
