//! The single-process ledger (sled): delivered ext_ids on disk, claims in memory (only this process
//! sends, and its claims die with it). An entry is fsynced before the message is acked, so a kill -9
//! between CoMagic's answer and the ack costs no duplicate. sled's reads, writes and flushes run on
//! the blocking pool, never on the async workers the lanes and the consumer share.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{Claim, Hold, LedgerError};
use crate::journey::{Entry as JourneyEntry, LocalJourney};

/// sled's page cache for the ledger (its default is 1 GiB, four times deliver's memory limit):
/// lookups are of recent ext_ids, which this keeps hot.
const CACHE_BYTES: u64 = 32 << 20;

/// One ext_id's claim.
struct Held {
    /// The batch holding it; `None` once released with a call that may have landed.
    hold: Option<Hold>,
    /// When it lapses unless renewed.
    until: Instant,
    /// When a holder last renewed it right before an upload.
    called_at: Option<DateTime<Utc>>,
}

impl Held {
    fn holds(&self, now: Instant) -> bool {
        self.hold.is_some() && self.until > now
    }
}

pub struct LocalLedger {
    db: sled::Db,
    /// The journeys, in the same database: a delivered one is its entry's tail.
    pub journey: Arc<LocalJourney>,
    claims: Mutex<HashMap<String, Held>>,
    /// Group commit: each record takes a ticket after writing; one flush covers every ticket
    /// taken before it started, so batches finishing together share one fsync instead of queueing
    /// for one each (which also shortens the window a kill -9 can turn into duplicates).
    written: AtomicU64,
    flushed: AtomicU64,
    flushing: tokio::sync::Mutex<()>,
}

impl LocalLedger {
    pub fn open(dir: &Path) -> Result<Self, sled::Error> {
        let db = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).cache_capacity(CACHE_BYTES).open()?;
        Ok(LocalLedger {
            journey: Arc::new(LocalJourney::open(&db)?),
            db,
            claims: Mutex::new(HashMap::new()),
            written: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    fn claims(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn contains(&self, ext_id: &str) -> bool {
        // A read error is treated as "not delivered": the worst case is a duplicate upload, which
        // CoMagic answers with duplicate_entity.
        self.db.contains_key(ext_id).unwrap_or(false)
    }

    /// Claims for `hold` each id not delivered and not claimed by a batch in hand (claims lapse
    /// after `claim_for`, in case one is never released). The claims are taken in memory first,
    /// then sled is read on the blocking pool: a record writes sled before it drops its claim, so
    /// an id recorded by the batch that held it is found delivered here, never claimed anew.
    pub async fn claim(
        self: &Arc<Self>,
        hold: Hold,
        ext_ids: &[&str],
        claim_for: Duration,
    ) -> Result<Vec<Claim>, LedgerError> {
        let claims = self.claim_in_memory(hold, ext_ids, claim_for);
        let (ledger, ids) = (self.clone(), ext_ids.iter().map(|id| (*id).to_owned()).collect::<Vec<_>>());
        let delivered = match tokio::task::spawn_blocking(move || ledger.delivered_of(ids)).await {
            Ok(delivered) => delivered,
            Err(error) => {
                self.release(hold, &[], ext_ids);
                return Err(error.into());
            }
        };
        let known: Vec<&str> = ext_ids.iter().copied().filter(|id| delivered.contains(*id)).collect();
        self.release(hold, &[], &known);
        Ok(ext_ids
            .iter()
            .zip(claims)
            .map(|(id, c)| if delivered.contains(*id) { Claim::Delivered } else { c })
            .collect())
    }

    fn claim_in_memory(&self, hold: Hold, ext_ids: &[&str], claim_for: Duration) -> Vec<Claim> {
        let now = Instant::now();
        let mut claims = self.claims();
        ext_ids
            .iter()
            .map(|id| {
                let (called_at, claim) = match claims.entry((*id).to_owned()) {
                    Entry::Occupied(held) if held.get().holds(now) => return Claim::Held,
                    Entry::Occupied(lapsed) => (lapsed.get().called_at, lapsed.into_mut()),
                    Entry::Vacant(free) => (None, free.insert(Held { hold: None, until: now, called_at: None })),
                };
                *claim = Held { hold: Some(hold), until: now + claim_for, called_at };
                match called_at {
                    Some(last_call) => Claim::TakenOver { last_call },
                    None => Claim::Mine,
                }
            })
            .collect()
    }

    #[cfg(test)]
    pub fn claimed_now(&self, ext_id: &str) -> bool {
        self.claims().get(ext_id).is_some_and(|held| held.holds(Instant::now()))
    }

    /// Which of `ext_ids` were delivered. Blocking: on the blocking pool.
    fn delivered_of(&self, ext_ids: Vec<String>) -> HashSet<String> {
        ext_ids.into_iter().filter(|id| self.contains(id)).collect()
    }

    /// Extends `hold`'s claims on `in_hand` that have not lapsed, and notes a call of `calling`
    /// now (a memory write); returns the ids renewed.
    pub fn renew(&self, hold: Hold, in_hand: &[&str], calling: &[&str], claim_for: Duration) -> HashSet<String> {
        let (now, called_at) = (Instant::now(), Utc::now());
        let calling: HashSet<&str> = calling.iter().copied().collect();
        let mut claims = self.claims();
        let mut renewed = HashSet::new();
        for id in in_hand {
            if let Some(held) = claims.get_mut(*id).filter(|held| held.hold == Some(hold) && held.holds(now)) {
                held.until = now + claim_for;
                if calling.contains(id) {
                    held.called_at = Some(called_at);
                }
                renewed.insert((*id).to_owned());
            }
        }
        renewed
    }

    /// Gives up `hold`'s claims: those of `kept` stay lapsed with their last call noted (the
    /// next claim is then [`Claim::TakenOver`]), those of `forgotten` (and of `kept` that no
    /// holder called with) are dropped.
    pub fn release(&self, hold: Hold, kept: &[&str], forgotten: &[&str]) {
        let now = Instant::now();
        let mut claims = self.claims();
        for id in kept {
            match claims.get_mut(*id).filter(|held| held.hold == Some(hold)) {
                Some(held) if held.called_at.is_some() => *held = Held { hold: None, until: now, ..*held },
                Some(_) => drop(claims.remove(*id)),
                None => {}
            }
        }
        for id in forgotten {
            if claims.get(*id).is_some_and(|held| held.hold == Some(hold)) {
                claims.remove(*id);
            }
        }
    }

    /// Records ext_ids as delivered, with their journeys' steps, and fsyncs them (sled's work on
    /// the blocking pool).
    pub async fn record(&self, ext_ids: &[&str], journeys: Vec<JourneyEntry>) -> Result<(), LedgerError> {
        self.record_at(ext_ids, journeys, Utc::now()).await
    }

    /// [`Self::record`] as of `now`, the time pruning counts from.
    async fn record_at(
        &self,
        ext_ids: &[&str],
        journeys: Vec<JourneyEntry>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let now = now.timestamp_millis().to_be_bytes();
        let ids: Vec<String> = ext_ids.iter().map(|id| (*id).to_owned()).collect();
        let (db, journey) = (self.db.clone(), self.journey.clone());
        tokio::task::spawn_blocking(move || {
            // An entry is its delivered time, then its journey's JSON when the journey is on.
            let mut batch = sled::Batch::default();
            for id in &ids {
                batch.insert(id.as_bytes(), &now);
            }
            if !journeys.is_empty() {
                for (id, entry) in journey.delivered(&journeys, now)? {
                    batch.insert(id.into_bytes(), entry);
                }
            }
            db.apply_batch(batch)
        })
        .await??;
        {
            let mut claims = self.claims();
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
        tokio::task::spawn_blocking(move || db.flush()).await??;
        self.flushed.store(covers, Ordering::SeqCst);
        Ok(())
    }
}

impl LocalLedger {
    /// Removes the entries recorded before `cutoff`, and the released claims last called before
    /// it; returns how many entries. Blocking (a full scan): call it on the blocking pool.
    pub fn prune_before(&self, cutoff: DateTime<Utc>) -> Result<usize, sled::Error> {
        self.claims().retain(|_, held| held.hold.is_some() || held.called_at.is_some_and(|t| t >= cutoff));
        let cutoff = cutoff.timestamp_millis();
        let mut removed = 0;
        let mut batch = sled::Batch::default();
        for entry in self.db.iter() {
            let (key, value) = entry?;
            // Its delivered time, then (with the journey on) its journey.
            let recorded = value.get(..8).and_then(|t| t.try_into().ok()).map(i64::from_be_bytes).unwrap_or(i64::MIN);
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
            ledger.record(&["vb-1", "vb-2"], Vec::new()).await.unwrap();
            assert!(ledger.contains("vb-1"));
        }
        let reopened = reopen(dir.path()).await;
        assert!(reopened.contains("vb-2") && !reopened.contains("vb-3"));
    }

    #[tokio::test]
    async fn pruning_removes_only_what_is_older_than_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = LocalLedger::open(dir.path()).unwrap();
        let between = chrono::Utc::now();
        ledger
            .record_at(&["vb-old-1", "vb-old-2"], Vec::new(), between - chrono::Duration::milliseconds(1))
            .await
            .unwrap();
        ledger.record_at(&["vb-new"], Vec::new(), between).await.unwrap();
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
                    tokio::spawn(async move { ledger.record(&[format!("vb-{i}").as_str()], Vec::new()).await.unwrap() })
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
    async fn a_claim_is_its_batchs_until_released_or_lapsed_and_a_delivered_id_is_never_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(LocalLedger::open(dir.path()).unwrap());
        let (long, first, second) = (Duration::from_secs(600), Hold(1), Hold(2));
        let claim = |hold, id, claim_for| {
            let ledger = ledger.clone();
            async move { ledger.claim(hold, &[id], claim_for).await.unwrap()[0] }
        };
        ledger.record(&["done"], Vec::new()).await.unwrap();
        let claims = ledger.claim(first, &["a", "a", "done"], long).await.unwrap();
        assert_eq!(claims, vec![Claim::Mine, Claim::Held, Claim::Delivered]);
        assert_eq!(claim(second, "a", long).await, Claim::Held, "a second copy waits");
        ledger.release(second, &[], &["a"]);
        assert_eq!(claim(second, "a", long).await, Claim::Held, "only its own batch releases a claim");
        ledger.release(first, &[], &["a"]);
        assert_eq!(claim(second, "a", Duration::ZERO).await, Claim::Mine, "released");
        assert_eq!(claim(first, "a", long).await, Claim::Mine, "lapsed, never called with: taken over clean");
        assert!(ledger.renew(second, &["a"], &[], long).is_empty(), "the batch that lost it renews nothing");
        assert!(ledger.renew(first, &["a"], &["a"], Duration::ZERO).contains("a"), "renewed before a call");
        let called = chrono::Utc::now();
        let Claim::TakenOver { last_call } = claim(second, "a", long).await else { panic!("a call was noted") };
        assert!(last_call <= called && called - last_call < chrono::Duration::seconds(5), "{last_call}");
        ledger.release(second, &["a"], &[]);
        assert_eq!(claim(first, "a", long).await, Claim::TakenOver { last_call }, "a kept release keeps the call");
        ledger.release(first, &[], &["a"]);
        assert_eq!(claim(second, "a", long).await, Claim::Mine, "a forgetting release forgets it");
        ledger.record(&["a"], Vec::new()).await.unwrap();
        assert_eq!(claim(first, "a", long).await, Claim::Delivered);
        assert_eq!(claim(first, "b", Duration::from_secs(30)).await, Claim::Mine);
        assert!(ledger.renew(first, &["b"], &[], long).contains("b"));
        assert_eq!(claim(second, "b", long).await, Claim::Held, "a renewed claim holds");
    }
}
