//! The journey's writer: one task writes every step that is not a delivery's (those go with the
//! ledger's own write), whatever has queued in one go. Nothing on an event's path waits for it,
//! but a dead letter's step, briefly; the queue is bounded in steps and in bytes, and keeps room
//! for dead letters' steps that one tenant's storm of retries cannot take.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bridge_shared::lifecycle::Shutdown;
use tokio::sync::{mpsc, oneshot};

use super::{Entry, Journal, JourneyError};

/// Steps queued at most; past it a step is dropped (and counted), never waited for.
pub(super) const QUEUED_AT_MOST: usize = 20_000;
/// A step that is not waited for is refused once fewer places than this are free: they are kept
/// for dead letters' steps.
const KEPT_FOR_WAITED: usize = QUEUED_AT_MOST / 4;
/// What the queued steps weigh at most, in bytes.
const QUEUED_BYTES_AT_MOST: usize = 32 << 20;
/// Steps one write takes at most.
const WRITE_AT_MOST: usize = 2_000;
/// How long a dead letter's step is waited for before its message is acked anyway.
const DEAD_STEP_WAIT: Duration = Duration::from_secs(2);

pub(super) struct Queued {
    entry: Entry,
    weight: usize,
    written: Option<oneshot::Sender<()>>,
}

/// What keeps the journal's store up to date: run by [`Journal::work`].
pub struct Writer {
    pub(super) queue: mpsc::Receiver<Queued>,
}

/// A step's weight in the queue: its webhook, if kept, and a kilobyte for the rest.
fn weight(entry: &Entry) -> usize {
    1024 + entry.summary.webhook.as_ref().map_or(0, String::len)
}

impl Journal {
    fn queue(&self, entry: Entry, written: Option<oneshot::Sender<()>>) -> bool {
        let weight = weight(&entry);
        let waited = written.is_some();
        let room = if waited { 0 } else { KEPT_FOR_WAITED };
        if self.queue.capacity() <= room || self.queued_bytes.load(Ordering::Relaxed) + weight > QUEUED_BYTES_AT_MOST {
            self.metrics.dropped.with_label_values(&["queue_full"]).inc();
            return false;
        }
        self.queued_bytes.fetch_add(weight, Ordering::Relaxed);
        if self.queue.try_send(Queued { entry, weight, written }).is_err() {
            self.queued_bytes.fetch_sub(weight, Ordering::Relaxed);
            self.metrics.dropped.with_label_values(&["queue_full"]).inc();
            return false;
        }
        true
    }

    /// Queues a step for the writer; never waits.
    pub fn note(&self, entry: Option<Entry>) {
        if let Some(entry) = entry {
            self.queue(entry, None);
        }
    }

    /// Queues a step and waits until it is written (durably), [`DEAD_STEP_WAIT`] at most; not at
    /// all while writes fail (the store does not answer: every dead letter would wait for nothing).
    pub async fn note_and_wait(&self, entry: Option<Entry>) {
        let Some(entry) = entry else { return };
        if self.failing.load(Ordering::Relaxed) {
            return self.note(Some(entry));
        }
        let (written, done) = oneshot::channel();
        if self.queue(entry, Some(written)) {
            let _ = tokio::time::timeout(DEAD_STEP_WAIT, done).await;
        }
    }

    /// Writes what is queued, a batch at a time, until `stop` and the queue is drained.
    pub async fn work(self: Arc<Self>, mut writer: Writer, stop: Shutdown) {
        let Some(store) = self.store.clone() else { return stop.stopped().await };
        loop {
            let first = tokio::select! {
                queued = writer.queue.recv() => queued,
                _ = stop.stopped() => writer.queue.try_recv().ok(),
            };
            let Some(first) = first else { return };
            let mut batch = vec![first];
            while batch.len() < WRITE_AT_MOST {
                match writer.queue.try_recv() {
                    Ok(queued) => batch.push(queued),
                    Err(_) => break,
                }
            }
            let durable = batch.iter().any(|q| q.written.is_some());
            let weight: usize = batch.iter().map(|q| q.weight).sum();
            let (entries, waiting): (Vec<Entry>, Vec<_>) = batch.into_iter().map(|q| (q.entry, q.written)).unzip();
            let count = entries.len() as u64;
            let written = store.write(entries, durable).await;
            self.queued_bytes.fetch_sub(weight, Ordering::Relaxed);
            self.failing.store(written.is_err(), Ordering::Relaxed);
            if let Err(error) = written {
                let reason = match error {
                    JourneyError::MergeConflict(_) => "merge_conflict",
                    _ => "write_failed",
                };
                self.metrics.dropped.with_label_values(&[reason]).inc_by(count);
                tracing::warn!(%error, steps = count, "journey steps not written");
            }
            for written in waiting.into_iter().flatten() {
                let _ = written.send(());
            }
        }
    }
}
