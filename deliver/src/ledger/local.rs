//! The single-process ledger (sled): delivered ext_ids on disk, claims in memory (only this process
//! sends). An entry is fsynced before the message is acked, so a kill -9 between CoMagic's answer
//! and the ack costs no duplicate.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::Claim;

/// sled's page cache for the ledger (its default is 1 GiB, four times deliver's memory limit):
/// lookups are of recent ext_ids, which this keeps hot.
const CACHE_BYTES: u64 = 32 << 20;

pub struct LocalLedger {
    db: sled::Db,
    /// ext_id → when its claim lapses.
    claims: Mutex<HashMap<String, Instant>>,
    /// Group commit: each record takes a ticket after writing; one flush covers every ticket
    /// taken before it started, so batches finishing together share one fsync instead of queueing
    /// for one each (which also shortens the window a kill -9 can turn into duplicates).
    written: AtomicU64,
    flushed: AtomicU64,
    flushing: tokio::sync::Mutex<()>,
}

impl LocalLedger {
    pub fn open(dir: &Path) -> Result<Self, sled::Error> {
        Ok(LocalLedger {
            db: sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).cache_capacity(CACHE_BYTES).open()?,
            claims: Mutex::new(HashMap::new()),
            written: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    fn contains(&self, ext_id: &str) -> bool {
        // A read error is treated as "not delivered": the worst case is a duplicate upload, which
        // CoMagic answers with duplicate_entity.
        self.db.contains_key(ext_id).unwrap_or(false)
    }

    /// Claims each id not delivered and not claimed by a batch in hand (claims lapse after
    /// `claim_for`, in case one is never released).
    pub fn claim(&self, ext_ids: &[&str], claim_for: Duration) -> Vec<Claim> {
        let now = Instant::now();
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        ext_ids
            .iter()
            .map(|id| {
                if self.contains(id) {
                    return Claim::Delivered;
                }
                match claims.entry((*id).to_owned()) {
                    Entry::Occupied(held) if *held.get() > now => Claim::Held,
                    Entry::Occupied(mut lapsed) => {
                        lapsed.insert(now + claim_for);
                        Claim::TakenOver
                    }
                    Entry::Vacant(free) => {
                        free.insert(now + claim_for);
                        Claim::Mine
                    }
                }
            })
            .collect()
    }

    /// Extends the claims on `ext_ids` that have not lapsed; returns those.
    pub fn renew(&self, ext_ids: &[&str], claim_for: Duration) -> HashSet<String> {
        let now = Instant::now();
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        let mut renewed = HashSet::new();
        for id in ext_ids {
            if let Some(held) = claims.get_mut(*id).filter(|until| **until > now) {
                *held = now + claim_for;
                renewed.insert((*id).to_owned());
            }
        }
        renewed
    }

    pub fn release(&self, ext_ids: &[String]) {
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        for id in ext_ids {
            claims.remove(id);
        }
    }

    /// Records ext_ids as delivered and fsyncs them.
    pub async fn record(&self, ext_ids: &[&str]) -> Result<(), sled::Error> {
        let now = chrono::Utc::now().timestamp_millis().to_be_bytes();
        let mut batch = sled::Batch::default();
        for id in ext_ids {
            batch.insert(*id, &now);
        }
        self.db.apply_batch(batch)?;
        {
            let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
            for id in ext_ids {
                claims.remove(*id);
            }
        }
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

impl LocalLedger {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens the ledger a dropped one left. sled's background threads let go of the directory's
    /// lock a moment after the drop, so the open is tried again until it takes the lock.
    async fn reopen(dir: &Path) -> LocalLedger {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match LocalLedger::open(dir) {
                Ok(ledger) => return ledger,
                Err(e) if Instant::now() < deadline && e.to_string().contains("could not acquire lock") => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("the ledger reopens: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn recorded_ids_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ledger = LocalLedger::open(dir.path()).unwrap();
            assert!(!ledger.contains("vb-1"));
            ledger.record(&["vb-1", "vb-2"]).await.unwrap();
            assert!(ledger.contains("vb-1"));
        }
        let reopened = reopen(dir.path()).await;
        assert!(reopened.contains("vb-2") && !reopened.contains("vb-3"));
    }

    #[tokio::test]
    async fn pruning_removes_only_what_is_older_than_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = LocalLedger::open(dir.path()).unwrap();
        ledger.record(&["vb-old-1", "vb-old-2"]).await.unwrap();
        let between = chrono::Utc::now() + chrono::Duration::milliseconds(5);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        ledger.record(&["vb-new"]).await.unwrap();
        assert_eq!(ledger.prune_before(between).unwrap(), 2);
        assert!(!ledger.contains("vb-old-1") && !ledger.contains("vb-old-2"));
        assert!(ledger.contains("vb-new"));
        assert_eq!(ledger.prune_before(between).unwrap(), 0, "nothing left to prune");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ledger = std::sync::Arc::new(LocalLedger::open(dir.path()).unwrap());
            let tasks: Vec<_> = (0..32)
                .map(|i| {
                    let ledger = ledger.clone();
                    tokio::spawn(async move { ledger.record(&[format!("vb-{i}").as_str()]).await.unwrap() })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            assert!(ledger.flushed.load(Ordering::SeqCst) >= 32, "every ticket was covered by a flush");
        }
        let reopened = reopen(dir.path()).await;
        assert!((0..32).all(|i| reopened.contains(&format!("vb-{i}"))));
    }

    #[tokio::test]
    async fn a_claim_is_held_until_released_or_lapsed_and_a_delivered_id_is_never_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = LocalLedger::open(dir.path()).unwrap();
        let long = Duration::from_secs(600);
        ledger.record(&["done"]).await.unwrap();
        assert_eq!(ledger.claim(&["a", "a", "done"], long), vec![Claim::Mine, Claim::Held, Claim::Delivered]);
        assert_eq!(ledger.claim(&["a"], long), vec![Claim::Held], "a second copy waits");
        ledger.release(&["a".to_owned()]);
        assert_eq!(ledger.claim(&["a"], Duration::ZERO), vec![Claim::Mine], "released");
        assert_eq!(ledger.claim(&["a"], long), vec![Claim::TakenOver], "a lapsed claim is taken over");
        assert_eq!(ledger.claim(&["b"], Duration::from_secs(30)), vec![Claim::Mine]);
        assert!(ledger.renew(&["b"], long).contains("b"));
        assert_eq!(ledger.claim(&["b"], long), vec![Claim::Held], "a renewed claim holds");
        assert_eq!(ledger.claim(&["c"], Duration::ZERO), vec![Claim::Mine]);
        assert!(ledger.renew(&["c"], long).is_empty(), "a lapsed claim is not renewed: a copy may hold it");
        ledger.record(&["a"]).await.unwrap();
        assert_eq!(ledger.claim(&["a"], long), vec![Claim::Delivered]);
    }
}
