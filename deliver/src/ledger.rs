//! The ledger of delivered ext_ids (sled): a redelivered event already accepted by CoMagic is acked
//! without a second upload. An entry is fsynced before the message is acked, so a kill -9 between
//! CoMagic's answer and the ack costs no duplicate. Entries older than `ledger_keep` are pruned
//! (hourly), so the ledger's disk stays bounded by a week or so of traffic.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// sled's page cache for the ledger (its default is 1 GiB, four times deliver's memory limit):
/// lookups are of recent ext_ids, which this keeps hot.
const CACHE_BYTES: u64 = 32 << 20;

pub struct Ledger {
    db: sled::Db,
    /// Group commit: each record takes a ticket after writing; one flush covers every ticket
    /// taken before it started, so batches finishing together share one fsync instead of queueing
    /// for one each (which also shortens the window a kill -9 can turn into duplicates).
    written: AtomicU64,
    flushed: AtomicU64,
    flushing: tokio::sync::Mutex<()>,
}

impl Ledger {
    pub fn open(dir: &Path) -> Result<Self, sled::Error> {
        Ok(Ledger {
            db: sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).cache_capacity(CACHE_BYTES).open()?,
            written: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn contains(&self, ext_id: &str) -> bool {
        // A read error is treated as "not delivered": the worst case is a duplicate upload, which
        // CoMagic answers with duplicate_entity.
        self.db.contains_key(ext_id).unwrap_or(false)
    }

    /// Records ext_ids as delivered and fsyncs them.
    pub async fn record<'a>(&self, ext_ids: impl IntoIterator<Item = &'a str>) -> Result<(), sled::Error> {
        let now = chrono::Utc::now().timestamp_millis().to_be_bytes();
        let mut batch = sled::Batch::default();
        for id in ext_ids {
            batch.insert(id, &now);
        }
        self.db.apply_batch(batch)?;
        let ticket = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        let _gate = self.flushing.lock().await;
        if self.flushed.load(Ordering::SeqCst) >= ticket {
            return Ok(()); // a flush that started after our write covered it
        }
        let covers = self.written.load(Ordering::SeqCst);
        // sled's flush_async misses wake-ups under concurrent callers (sled#1241): flush on the
        // blocking pool instead.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush()).await.expect("a flush does not panic")?;
        self.flushed.store(covers, Ordering::SeqCst);
        Ok(())
    }
}

impl Ledger {
    /// Removes the entries recorded before `cutoff`; returns how many. Blocking (a full scan):
    /// call it on the blocking pool.
    pub fn prune_before(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<usize, sled::Error> {
        let cutoff = cutoff.timestamp_millis();
        let mut removed = 0;
        let mut batch = sled::Batch::default();
        for entry in self.db.iter() {
            let (key, value) = entry?;
            let recorded = value.as_ref().try_into().map(i64::from_be_bytes).unwrap_or(i64::MIN);
            if recorded < cutoff {
                batch.remove(key);
                removed += 1;
            }
            if removed > 0 && removed % 10_000 == 0 {
                self.db.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(removed)
    }

    /// Prunes every `every` until `stop` is set.
    pub async fn prune_periodically(
        self: std::sync::Arc<Self>,
        keep: std::time::Duration,
        every: std::time::Duration,
        stop: bridge_shared::lifecycle::Shutdown,
    ) {
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.stopped() => return,
            }
            let ledger = self.clone();
            let cutoff = chrono::Utc::now() - keep;
            match tokio::task::spawn_blocking(move || ledger.prune_before(cutoff)).await {
                Ok(Ok(removed)) => tracing::info!(removed, "ledger pruned"),
                Ok(Err(error)) => tracing::warn!(%error, "ledger pruning failed; will try again"),
                Err(error) => tracing::warn!(%error, "ledger pruning panicked; will try again"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recorded_ids_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ledger = Ledger::open(dir.path()).unwrap();
            assert!(!ledger.contains("vb-1"));
            ledger.record(["vb-1", "vb-2"]).await.unwrap();
            assert!(ledger.contains("vb-1"));
        }
        let reopened = Ledger::open(dir.path()).unwrap();
        assert!(reopened.contains("vb-2") && !reopened.contains("vb-3"));
    }

    #[tokio::test]
    async fn pruning_removes_only_what_is_older_than_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        ledger.record(["vb-old-1", "vb-old-2"]).await.unwrap();
        let between = chrono::Utc::now() + chrono::Duration::milliseconds(5);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        ledger.record(["vb-new"]).await.unwrap();
        assert_eq!(ledger.prune_before(between).unwrap(), 2);
        assert!(!ledger.contains("vb-old-1") && !ledger.contains("vb-old-2"));
        assert!(ledger.contains("vb-new"));
        assert_eq!(ledger.prune_before(between).unwrap(), 0, "nothing left to prune");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ledger = std::sync::Arc::new(Ledger::open(dir.path()).unwrap());
            let tasks: Vec<_> = (0..32)
                .map(|i| {
                    let ledger = ledger.clone();
                    tokio::spawn(async move { ledger.record([format!("vb-{i}").as_str()]).await.unwrap() })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            assert!(ledger.flushed.load(Ordering::SeqCst) >= 32, "every ticket was covered by a flush");
        }
        let reopened = Ledger::open(dir.path()).unwrap();
        assert!((0..32).all(|i| reopened.contains(&format!("vb-{i}"))));
    }
}
