//! The local spool: while the broker cannot take an event, it is written to sled and fsynced before
//! the webhook is answered; a drainer publishes the spool oldest first, removing each event only
//! after the broker confirmed it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bridge_shared::event::EventKind;
use futures_util::future::join_all;
use prometheus::IntGauge;
use tokio::sync::{watch, Notify};

use crate::broker::BrokerLink;

/// Events published at once by the drainer: the confirm window.
const DRAIN_WINDOW: usize = 64;

pub struct Spool {
    db: sled::Db,
    /// sled's own `len` is a full scan; this is kept in step with inserts and removals.
    count: AtomicUsize,
    max_events: usize,
    depth: IntGauge,
    writable: AtomicBool,
    pushed: Notify,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool cannot store the event: {0}")]
    Storage(#[from] sled::Error),
    #[error("the spool is full ({0} events)")]
    Full(usize),
}

/// One spooled event: its key (the order it arrived in) and what to publish.
pub struct Spooled {
    key: sled::IVec,
    pub kind: EventKind,
    pub body: Vec<u8>,
}

impl Spool {
    pub fn open(dir: &Path, max_events: usize, depth: IntGauge) -> Result<Self, SpoolError> {
        let db = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).open()?;
        let count = db.len();
        depth.set(count as i64);
        Ok(Spool {
            db,
            count: AtomicUsize::new(count),
            max_events,
            depth,
            writable: AtomicBool::new(true),
            pushed: Notify::new(),
        })
    }

    /// Stores an event and fsyncs before returning: after `Ok`, a crash does not lose it.
    pub async fn push(&self, kind: EventKind, body: &[u8]) -> Result<(), SpoolError> {
        let result = async {
            if self.len() >= self.max_events {
                return Err(SpoolError::Full(self.max_events));
            }
            let key = self.db.generate_id()?.to_be_bytes();
            let mut value = Vec::with_capacity(body.len() + 1);
            value.push(kind_byte(kind));
            value.extend_from_slice(body);
            self.db.insert(key, value)?;
            self.count.fetch_add(1, Ordering::Relaxed);
            self.sync().await
        }
        .await;
        self.writable.store(result.is_ok(), Ordering::Relaxed);
        if result.is_ok() {
            self.depth.set(self.len() as i64);
            self.pushed.notify_one();
        }
        result
    }

    /// Whether the last write succeeded (a full disk or spool makes it false until one does).
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed) && self.len() < self.max_events
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn oldest(&self, n: usize) -> Vec<Spooled> {
        self.db
            .iter()
            .filter_map(Result::ok)
            .take(n)
            .filter_map(|(key, value)| {
                let (first, body) = value.split_first()?;
                Some(Spooled { key, kind: kind_from_byte(*first)?, body: body.to_vec() })
            })
            .collect()
    }

    fn remove(&self, key: &sled::IVec) {
        match self.db.remove(key) {
            Ok(Some(_)) => {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            Ok(None) => {}
            // The event stays and is published again later: a duplicate, never a loss.
            Err(error) => tracing::error!(%error, "could not remove a published event from the spool"),
        }
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
        tokio::task::spawn_blocking(move || db.flush()).await.expect("a flush does not panic")?;
        Ok(())
    }

    /// Publishes spooled events whenever the broker is connected, until `shutdown`.
    pub async fn drain(self: Arc<Self>, link: Arc<BrokerLink>, exchange: String, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            if self.is_empty() {
                tokio::select! {
                    _ = self.pushed.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                continue;
            }
            let publisher = tokio::select! {
                p = link.connected() => p,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let batch = self.oldest(DRAIN_WINDOW);
            let results = join_all(
                batch.iter().map(|e| publisher.publish(&exchange, e.kind.as_str(), &e.body, Default::default())),
            )
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
            self.depth.set(self.len() as i64);
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
