//! The local spool: while the broker cannot take an event, it is written to sled and fsynced before
//! the webhook is answered; a drainer publishes the spool oldest first, removing each event only
//! after the broker confirmed it.
//!
//! Nothing here may spin or grow without bound. The spool is capped in bytes of events, set well
//! under its volume (sled's log needs room of its own, and a full disk breaks it for good); past
//! the cap webhooks get 503. An entry that cannot be read is moved to a quarantine tree, counted,
//! and left for an operator. An event published but not removable (a failing disk) is not
//! published again and again: the drainer remembers it, retries the removal, and backs off.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bridge_shared::amqp::topology::event_route;
use bridge_shared::amqp::BrokerLink;
use bridge_shared::event::EventKind;
use bridge_shared::lifecycle::Shutdown;
use bridge_shared::telemetry::IngestMetrics;
use futures_util::future::join_all;
use tokio::sync::Notify;

/// Events published at once by the drainer: the confirm window.
const DRAIN_WINDOW: usize = 64;
/// sled's page cache: the spool is written once and read once, so a small cache is enough.
const CACHE_BYTES: u64 = 16 << 20;
/// What readiness counts as room for one more event: a short dialog.
const SMALL_EVENT: u64 = 1024;
/// The longest pause of a drainer that cannot remove what it published.
const MAX_REMOVE_BACKOFF: Duration = Duration::from_secs(30);

pub struct Spool {
    db: sled::Db,
    /// Entries that could not be read, kept for an operator rather than dropped or spun on.
    quarantine: sled::Tree,
    /// sled's own `len` is a full scan; these are kept in step with inserts and removals.
    count: AtomicUsize,
    bytes: AtomicU64,
    max_bytes: u64,
    metrics: IngestMetrics,
    writable: AtomicBool,
    pushed: Notify,
    /// Published and confirmed, but the removal failed: never published again, removed later.
    unremoved: Mutex<HashSet<sled::IVec>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool cannot store the event: {0}")]
    Storage(#[from] sled::Error),
    #[error("the spool is full ({0} bytes of events)")]
    Full(u64),
}

/// An event read back from the spool, ready to publish.
struct SpooledEvent {
    key: sled::IVec,
    kind: EventKind,
    body: Vec<u8>,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most `max_bytes` of events.
    pub fn open(dir: &Path, max_bytes: u64, metrics: IngestMetrics) -> Result<Self, SpoolError> {
        let db = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).cache_capacity(CACHE_BYTES).open()?;
        let quarantine = db.open_tree("quarantine")?;
        let (mut count, mut bytes) = (0, 0);
        for entry in db.iter() {
            let (_, value) = entry?;
            count += 1;
            bytes += value.len() as u64;
        }
        let spool = Spool {
            db,
            quarantine,
            count: AtomicUsize::new(count),
            bytes: AtomicU64::new(bytes),
            max_bytes,
            metrics,
            writable: AtomicBool::new(true),
            pushed: Notify::new(),
            unremoved: Mutex::default(),
        };
        spool.report();
        Ok(spool)
    }

    fn report(&self) {
        self.metrics.spool_events.set(self.len() as i64);
        self.metrics.spool_bytes.set(i64::try_from(self.bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
    }

    /// Stores an event and fsyncs before returning: after `Ok`, a crash does not lose it.
    pub async fn push(&self, kind: EventKind, body: &[u8]) -> Result<(), SpoolError> {
        let size = body.len() as u64 + 1;
        let result = async {
            if self.bytes.load(Ordering::Relaxed) + size > self.max_bytes {
                return Err(SpoolError::Full(self.max_bytes));
            }
            let key = self.db.generate_id()?.to_be_bytes();
            let mut value = Vec::with_capacity(body.len() + 1);
            value.push(kind_byte(kind));
            value.extend_from_slice(body);
            self.db.insert(key, value)?;
            self.count.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(size, Ordering::Relaxed);
            self.sync().await
        }
        .await;
        // A full spool is not a broken one: only a storage failure makes it unwritable.
        self.writable.store(!matches!(result, Err(SpoolError::Storage(_))), Ordering::Relaxed);
        if result.is_ok() {
            self.report();
            self.pushed.notify_one();
        }
        result
    }

    /// Whether an event could be stored now: the last write did not fail and there is room for a
    /// small one.
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed) && self.bytes.load(Ordering::Relaxed) + SMALL_EVENT <= self.max_bytes
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events in the spool that are still to be published.
    fn waiting(&self) -> usize {
        self.len().saturating_sub(self.unremoved().len())
    }

    fn unremoved(&self) -> std::sync::MutexGuard<'_, HashSet<sled::IVec>> {
        self.unremoved.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Up to `n` of the oldest events not yet published. Unreadable entries met on the way are
    /// quarantined; a read error ends the batch early (the drainer waits and tries again).
    fn oldest(&self, n: usize) -> Vec<SpooledEvent> {
        let published = self.unremoved().clone();
        let mut batch = Vec::with_capacity(n);
        for entry in self.db.iter() {
            let Ok((key, value)) = entry else {
                self.metrics.spool_errors.with_label_values(&["read"]).inc();
                break;
            };
            if published.contains(&key) {
                continue;
            }
            match value.split_first().and_then(|(first, body)| Some((kind_from_byte(*first)?, body))) {
                Some((kind, body)) => batch.push(SpooledEvent { key, kind, body: body.to_vec() }),
                None => self.quarantine_entry(&key, &value),
            }
            if batch.len() == n {
                break;
            }
        }
        batch
    }

    fn quarantine_entry(&self, key: &sled::IVec, value: &sled::IVec) {
        self.metrics.spool_errors.with_label_values(&["unreadable"]).inc();
        tracing::error!(bytes = value.len(), "an unreadable spool entry was moved to the quarantine tree");
        if self.quarantine.insert(key, value.clone()).is_ok() {
            self.forget(key);
        }
    }

    /// Removes a published event; on failure it is remembered, so it is not published again.
    fn remove(&self, key: &sled::IVec) {
        if !self.forget(key) {
            self.metrics.spool_errors.with_label_values(&["remove"]).inc();
            self.unremoved().insert(key.clone());
        }
    }

    /// Deletes an entry from the spool and its counts; `false` when the storage refused.
    fn forget(&self, key: &sled::IVec) -> bool {
        match self.db.remove(key) {
            Ok(Some(value)) => {
                self.count.fetch_sub(1, Ordering::Relaxed);
                self.bytes.fetch_sub(value.len() as u64, Ordering::Relaxed);
                true
            }
            Ok(None) => true,
            Err(error) => {
                tracing::error!(%error, "could not remove an event from the spool");
                false
            }
        }
    }

    /// Retries the removals that failed; `true` when none is left.
    fn retry_removals(&self) -> bool {
        let pending: Vec<sled::IVec> = self.unremoved().iter().cloned().collect();
        let removed: Vec<sled::IVec> = pending.into_iter().filter(|key| self.forget(key)).collect();
        let mut unremoved = self.unremoved();
        for key in &removed {
            unremoved.remove(key);
        }
        unremoved.is_empty()
    }

    pub async fn flush(&self) {
        if let Err(error) = self.sync().await {
            tracing::error!(%error, "spool flush failed");
        }
    }

    /// fsyncs everything written so far. sled's own `flush_async` never wakes some of several
    /// concurrent callers (sled#1241, #1308), so the blocking flush runs on the blocking pool; one
    /// flush covers every write before it, so concurrent webhooks share the cost.
    async fn sync(&self) -> Result<(), SpoolError> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(flushed) => flushed.map(drop).map_err(SpoolError::from),
            Err(_) => Err(SpoolError::Storage(sled::Error::ReportableBug("the spool flush panicked".into()))),
        }
    }

    /// Waits until every spooled event is published (the drain task does it), or `deadline`
    /// passes; true when the spool is empty.
    pub async fn emptied(&self, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        while !self.is_empty() {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.flush().await;
        true
    }

    /// Publishes spooled events whenever the broker is connected, until `shutdown`.
    pub async fn drain(self: Arc<Self>, link: Arc<BrokerLink>, exchange: String, shutdown: Shutdown) {
        let mut remove_backoff = Duration::ZERO;
        loop {
            if shutdown.is_stopping() {
                return;
            }
            if self.retry_removals() {
                remove_backoff = Duration::ZERO;
            } else {
                // The disk refuses removals: wait longer each time rather than spin.
                remove_backoff = (remove_backoff * 2).clamp(Duration::from_millis(200), MAX_REMOVE_BACKOFF);
                tokio::select! {
                    _ = tokio::time::sleep(remove_backoff) => {}
                    _ = shutdown.stopped() => return,
                }
            }
            if self.waiting() == 0 {
                tokio::select! {
                    _ = self.pushed.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.stopped() => return,
                }
                continue;
            }
            let publisher = tokio::select! {
                p = link.connected() => p,
                _ = shutdown.stopped() => return,
            };
            let batch = self.oldest(DRAIN_WINDOW);
            if batch.is_empty() {
                // Nothing readable now (quarantined entries, a read error): try again in a while.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.stopped() => return,
                }
                continue;
            }
            let results =
                join_all(batch.iter().map(|e| {
                    publisher.publish(&exchange, event_route(e.kind, e.body.len()), &e.body, Default::default())
                }))
                .await;
            let mut failed = false;
            for (event, result) in batch.iter().zip(results) {
                match result {
                    Ok(()) => self.remove(&event.key),
                    Err(error) => {
                        failed = true;
                        tracing::warn!(%error, "publishing a spooled event failed; it stays in the spool");
                    }
                }
            }
            self.report();
            if failed {
                link.report_failure(&publisher);
                tokio::time::sleep(Duration::from_millis(200)).await;
            } else if self.is_empty() {
                self.flush().await;
                tracing::info!("spool drained");
            }
        }
    }
}

fn kind_byte(kind: EventKind) -> u8 {
    match kind {
        EventKind::Chat => b'c',
        EventKind::Offline => b'o',
    }
}

fn kind_from_byte(b: u8) -> Option<EventKind> {
    EventKind::ALL.into_iter().find(|k| kind_byte(*k) == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(dir: &Path, max_bytes: u64) -> (Spool, prometheus::Registry) {
        let registry = prometheus::Registry::new();
        (Spool::open(dir, max_bytes, IngestMetrics::new(&registry)).unwrap(), registry)
    }

    #[tokio::test]
    async fn the_cap_is_in_bytes_and_a_full_spool_stays_writable_once_drained() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = spool(dir.path(), 2_500);
        spool.push(EventKind::Chat, &[b'x'; 1_000]).await.unwrap();
        spool.push(EventKind::Chat, &[b'x'; 1_000]).await.unwrap();
        assert!(matches!(spool.push(EventKind::Chat, &[b'x'; 1_000]).await, Err(SpoolError::Full(2_500))));
        assert!(!spool.writable(), "less than a small event's room left");
        let oldest = spool.oldest(10);
        assert_eq!(oldest.len(), 2);
        spool.remove(&oldest[0].key);
        spool.push(EventKind::Offline, &[b'y'; 1_000]).await.unwrap();
        assert_eq!(spool.len(), 2);
    }

    #[tokio::test]
    async fn an_unreadable_entry_is_quarantined_counted_and_never_returned() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, registry) = spool(dir.path(), 1 << 20);
        spool.db.insert([0xfe; 8], b"?garbage".to_vec()).unwrap();
        spool.db.insert([0xff; 8], Vec::<u8>::new()).unwrap();
        spool.count.fetch_add(2, Ordering::Relaxed);
        spool.push(EventKind::Chat, b"{}").await.unwrap();
        let batch = spool.oldest(DRAIN_WINDOW);
        assert_eq!(batch.len(), 1, "the readable event only");
        assert_eq!((spool.len(), spool.quarantine.len()), (1, 2));
        let text = bridge_shared::telemetry::render(&registry);
        assert!(text.contains(r#"bridge_ingest_spool_errors_total{reason="unreadable"} 2"#), "{text}");
        assert_eq!(spool.oldest(DRAIN_WINDOW).len(), 1, "quarantined entries are not met again");
    }
}
