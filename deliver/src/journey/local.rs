//! The journey of the single-process ledger, in the ledger's own sled database, laid out so that
//! the common case costs next to nothing: a delivered event's journey is the tail of its ledger
//! entry (`delivered_at` in the first 8 bytes, the journey's JSON after them), written in the
//! ledger's own batch and flush. A sled write costs microseconds here; an index entry per event
//! would halve deliver's throughput.
//!
//! Trees besides the ledger's: `journey` (event id → the journey, for the journeys not delivered:
//! on their way, dead-lettered, skipped), `journey_index` (integration, newest accepted time,
//! a sequence → the events first written together, each with its accepted time and lookup keys:
//! one entry per write and integration, which searches read newest first), `journey_open`
//! (accepted time, event id → integration, of the journeys on their way: what the "lost in the
//! middle" count reads) and `journey_meta` (the contact key). Every call here blocks: run it on
//! the blocking pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::{Batch, Tree};

use super::brief;
use super::query::{Cursor, Page, Query, SCANNED_PER_PAGE};
use super::record::{Entry, Journey, Keys, Summary, SKIPPED};

/// Index entries one pruning pass takes before it lets writes in again.
const PRUNED_PER_PASS: usize = 200;

pub struct LocalJourney {
    /// The ledger (sled's default tree): a delivered event's journey is its entry's tail.
    ledger: sled::Db,
    journeys: Tree,
    index: Tree,
    open: Tree,
    pub contact_keys: Keys,
    /// Merges are read-modify-write: one at a time.
    writing: Mutex<()>,
    /// The next index entry's sequence: from the clock at start, so a restart does not reuse one.
    sequence: AtomicU64,
}

/// One event of an index entry.
#[derive(Debug, Serialize, Deserialize)]
struct Row {
    id: String,
    /// Accepted at, in ms.
    at: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    lookups: Vec<String>,
}

impl Row {
    fn of(s: &Summary) -> Self {
        Row { id: s.event_id.clone(), at: stamp(s.accepted_at), lookups: s.lookups.clone() }
    }
}

/// Where a journey was found.
enum Found {
    OnItsWay,
    /// In the ledger's entry, delivered at (its first 8 bytes).
    Delivered([u8; 8]),
}

fn stamp(at: DateTime<Utc>) -> u64 {
    // Before 1970 sorts first; nothing accepted is.
    at.timestamp_millis().max(0) as u64
}

fn open_key(at: u64, id: &str) -> Vec<u8> {
    [&at.to_be_bytes()[..], id.as_bytes()].concat()
}

fn index_key(integration: &str, at: u64, sequence: u64) -> Vec<u8> {
    [integration.as_bytes(), b"\0", &at.to_be_bytes(), &sequence.to_be_bytes()].concat()
}

/// The accepted time and sequence at the end of an index key of `integration`.
fn index_parts(key: &[u8], integration: &str) -> Option<(u64, u64)> {
    let rest = key.get(integration.len() + 1..)?;
    Some((u64::from_be_bytes(rest.get(..8)?.try_into().ok()?), u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?)))
}

/// A journey as a ledger entry's tail holds it (its lookup keys are in its index entry).
pub fn delivered_entry(delivered_at: [u8; 8], journey: &Journey) -> Vec<u8> {
    let mut entry = delivered_at.to_vec();
    let lookups = &journey.summary.lookups;
    if lookups.is_empty() {
        let _ = serde_json::to_writer(&mut entry, journey);
    } else {
        let mut bare = journey.clone();
        bare.summary.lookups = Vec::new();
        let _ = serde_json::to_writer(&mut entry, &bare);
    }
    entry
}

impl LocalJourney {
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        let meta = db.open_tree("journey_meta")?;
        let contact_key = match meta.get("contact_key")? {
            Some(key) => key.to_vec(),
            None => {
                let key = super::new_contact_key().map_err(sled::Error::Io)?;
                meta.insert("contact_key", key.as_slice())?;
                key
            }
        };
        let started = Utc::now().timestamp_nanos_opt().unwrap_or_default().max(0) as u64;
        Ok(LocalJourney {
            ledger: db.clone(),
            journeys: db.open_tree("journey")?,
            index: db.open_tree("journey_index")?,
            open: db.open_tree("journey_open")?,
            contact_keys: Keys::new(&contact_key),
            writing: Mutex::new(()),
            sequence: AtomicU64::new(started),
        })
    }

    fn on_its_way(&self, event_id: &str) -> Result<Option<(Journey, Found)>, sled::Error> {
        let stored = self.journeys.get(event_id)?;
        Ok(stored.and_then(|bytes| serde_json::from_slice(&bytes).ok()).map(|j| (j, Found::OnItsWay)))
    }

    fn found(&self, event_id: &str) -> Result<Option<(Journey, Found)>, sled::Error> {
        if let Some(found) = self.on_its_way(event_id)? {
            return Ok(Some(found));
        }
        let Some(entry) = self.ledger.get(event_id)? else { return Ok(None) };
        let (Some(at), Some(tail)) = (entry.get(..8), entry.get(8..).filter(|t| !t.is_empty())) else {
            return Ok(None);
        };
        let at: [u8; 8] = at.try_into().unwrap_or_default();
        let journey = match tail.split_first() {
            Some((&brief::MARK, brief)) => brief::decode(event_id, brief),
            _ => serde_json::from_slice(tail).ok(),
        };
        Ok(journey.map(|j| (j, Found::Delivered(at))))
    }

    pub fn get(&self, event_id: &str) -> Result<Option<Journey>, sled::Error> {
        Ok(self.found(event_id)?.map(|(j, _)| j))
    }

    /// Folds `entries` into their journeys, in order (steps the writer task gathered); `durable`:
    /// flushed before it returns.
    pub fn write(&self, entries: &[Entry], durable: bool) -> Result<(), sled::Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let _one_at_a_time = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut merged = self.merge(entries, false)?;
        let (mut journeys, mut ledger, mut open) = (Batch::default(), Batch::default(), Batch::default());
        for (id, (journey, found)) in &mut merged {
            match found {
                Some(Found::Delivered(at)) => ledger.insert(id.as_bytes(), delivered_entry(*at, journey)),
                _ => journeys.insert(id.as_bytes(), serde_json::to_vec(journey).unwrap_or_default()),
            }
            let key = open_key(stamp(journey.summary.accepted_at), id);
            match journey.end.is_none() && journey.last != SKIPPED {
                true => open.insert(key, journey.summary.integration.as_bytes()),
                false => open.remove(key),
            }
        }
        self.index_new(&merged)?;
        self.open.apply_batch(open)?;
        self.ledger.apply_batch(ledger)?;
        self.journeys.apply_batch(journeys)?;
        if durable {
            self.ledger.flush()?;
        }
        Ok(())
    }

    /// The journeys of delivered `entries`, merged, as the ledger entries (delivered at `now`)
    /// the caller writes in its own batch: the one sled write a delivery costs.
    pub fn delivered(&self, entries: &[Entry], now: [u8; 8]) -> Result<Vec<(String, Vec<u8>)>, sled::Error> {
        let _one_at_a_time = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ledger = Vec::with_capacity(entries.len());
        // A fresh event's first step: a brief, and its row in the index; no journey is built.
        let (fresh, others): (Vec<&Entry>, Vec<&Entry>) = entries.iter().partition(|e| e.fresh);
        let mut rows: HashMap<&str, Vec<Row>> = HashMap::new();
        for entry in fresh {
            let mut value = now.to_vec();
            brief::encode(entry, &mut value);
            ledger.push((entry.summary.event_id.clone(), value));
            rows.entry(entry.summary.integration.as_str()).or_default().push(Row::of(&entry.summary));
        }
        let others: Vec<Entry> = others.into_iter().cloned().collect();
        let merged = self.merge(&others, true)?;
        let (mut journeys, mut open, mut were_on_their_way) = (Batch::default(), Batch::default(), false);
        for (id, (journey, found)) in &merged {
            if matches!(found, Some(Found::OnItsWay)) {
                journeys.remove(id.as_bytes());
                open.remove(open_key(stamp(journey.summary.accepted_at), id));
                were_on_their_way = true;
            }
            let at = match found {
                Some(Found::Delivered(at)) => *at,
                _ => now,
            };
            ledger.push((id.clone(), delivered_entry(at, journey)));
        }
        for (journey, _) in merged.values().filter(|(_, found)| found.is_none()) {
            rows.entry(journey.summary.integration.as_str()).or_default().push(Row::of(&journey.summary));
        }
        self.index_rows(rows)?;
        // Before the ledger's batch: a crash between the two leaves the journey where a copy's
        // delivery finds it, never a delivered entry whose journey is gone.
        if were_on_their_way {
            self.open.apply_batch(open)?;
            self.journeys.apply_batch(journeys)?;
        }
        Ok(ledger)
    }

    /// Each event's journey with `entries` pushed, and where it was (none: it starts now). A
    /// `delivering` entry's event is not in the ledger (it was claimed), and a fresh one's is
    /// nowhere yet: neither is looked for there.
    fn merge(
        &self,
        entries: &[Entry],
        delivering: bool,
    ) -> Result<HashMap<String, (Journey, Option<Found>)>, sled::Error> {
        let mut merged: HashMap<String, (Journey, Option<Found>)> = HashMap::new();
        for entry in entries {
            let id = &entry.summary.event_id;
            if !merged.contains_key(id) {
                let stored = match (delivering, entry.fresh) {
                    (true, true) => None,
                    (true, false) => self.on_its_way(id)?,
                    (false, _) => self.found(id)?,
                };
                let (journey, found) = match stored {
                    Some((journey, found)) => (journey, Some(found)),
                    None => (Journey::new((*entry.summary).clone()), None),
                };
                merged.insert(id.clone(), (journey, found));
            }
            if let Some((journey, _)) = merged.get_mut(id) {
                journey.push(entry.step.clone());
            }
        }
        Ok(merged)
    }

    /// One index entry per integration for the journeys that start in this write.
    fn index_new(&self, merged: &HashMap<String, (Journey, Option<Found>)>) -> Result<(), sled::Error> {
        let mut rows: HashMap<&str, Vec<Row>> = HashMap::new();
        for (journey, _) in merged.values().filter(|(_, found)| found.is_none()) {
            rows.entry(journey.summary.integration.as_str()).or_default().push(Row::of(&journey.summary));
        }
        self.index_rows(rows)
    }

    fn index_rows(&self, rows: HashMap<&str, Vec<Row>>) -> Result<(), sled::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut index = Batch::default();
        for (integration, mut rows) in rows {
            rows.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.id.cmp(&a.id)));
            let newest = rows[0].at;
            let key = index_key(integration, newest, self.sequence.fetch_add(1, Ordering::Relaxed));
            index.insert(key, serde_json::to_vec(&rows).unwrap_or_default());
        }
        self.index.apply_batch(index)
    }

    /// Newest first (by the write that started them), within the query's bounds; at most
    /// [`SCANNED_PER_PAGE`] events looked at. The cursor names an index entry and a place in it.
    pub fn find(&self, q: &Query) -> Result<Page, sled::Error> {
        if let Some(id) = &q.event_id {
            let found = self.get(id)?.filter(|j| q.matches(j));
            return Ok(Page { events: found.into_iter().collect(), next: None });
        }
        let lookup = q.lookup(&self.contact_keys);
        let prefix = [q.integration.as_bytes(), b"\0"].concat();
        let (upper, resume) = match &q.before {
            Some(c) => {
                let (sequence, place) = c.event_id.split_once('.').unwrap_or(("0", "0"));
                let (sequence, place) = (sequence.parse().unwrap_or(0), place.parse().unwrap_or(0usize));
                (index_key(&q.integration, c.stamp, sequence), Some(((c.stamp, sequence), place)))
            }
            None => ([prefix.as_slice(), &[0xff; 17]].concat(), None),
        };
        let mut page = Page::default();
        let mut scanned = 0;
        for item in self.index.range(prefix.clone()..=upper).rev() {
            let (key, value) = item?;
            let Some(parts) = index_parts(&key, &q.integration) else { continue };
            if q.from.is_some_and(|from| (parts.0 as i64) < from.timestamp_millis()) {
                break;
            }
            let rows: Vec<Row> = serde_json::from_slice(&value).unwrap_or_default();
            let start = resume.filter(|(at, _)| *at == parts).map_or(0, |(_, place)| place);
            for (place, row) in rows.iter().enumerate().skip(start) {
                if scanned >= SCANNED_PER_PAGE || page.events.len() >= q.limit {
                    page.next = Some(Cursor { stamp: parts.0, event_id: format!("{}.{place}", parts.1) });
                    return Ok(page);
                }
                scanned += 1;
                if lookup.as_ref().is_some_and(|l| !row.lookups.contains(l)) {
                    continue;
                }
                if let Some(journey) = self.get(&row.id)?.filter(|j| q.matches(j)) {
                    page.events.push(journey);
                }
            }
        }
        Ok(page)
    }

    /// The journeys on their way since before `cutoff` (not waiting on purpose), per integration.
    pub fn lost(&self, cutoff: DateTime<Utc>) -> Result<HashMap<String, i64>, sled::Error> {
        let mut lost = HashMap::new();
        for item in self.open.range(..stamp(cutoff).to_be_bytes().to_vec()) {
            let (key, integration) = item?;
            let Some(id) = key.get(8..).and_then(|id| std::str::from_utf8(id).ok()) else { continue };
            if self.get(id)?.is_some_and(|j| j.lost_since(cutoff)) {
                *lost.entry(String::from_utf8_lossy(&integration).into_owned()).or_insert(0) += 1;
            }
        }
        Ok(lost)
    }

    /// Removes the journeys accepted before `cutoff` (a delivered one's tail of its ledger entry,
    /// which stays as long as `ledger_keep` says), [`PRUNED_PER_PASS`] index entries at a time so
    /// deliveries are never held up for long; returns how many journeys.
    pub fn prune_before(&self, cutoff: DateTime<Utc>) -> Result<usize, sled::Error> {
        let cutoff = stamp(cutoff);
        let mut removed = 0;
        let mut from: Vec<u8> = Vec::new();
        while let Some(item) = self.index.range(from.clone()..).next() {
            let (key, _) = item?;
            let Some(end) = key.iter().position(|b| *b == 0) else { break };
            let integration = String::from_utf8_lossy(&key[..end]).into_owned();
            loop {
                let (pruned, more) = self.prune_pass(&integration, cutoff)?;
                removed += pruned;
                if !more {
                    break;
                }
            }
            from = [&key[..end], b"\x01"].concat();
        }
        Ok(removed)
    }

    /// One pass over `integration`'s oldest index entries: whether more may be left.
    fn prune_pass(&self, integration: &str, cutoff: u64) -> Result<(usize, bool), sled::Error> {
        let _one_at_a_time = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let (low, high) = (index_key(integration, 0, 0), index_key(integration, cutoff, 0));
        let (mut removed, mut entries) = (0, 0);
        let (mut journeys, mut ledger, mut open, mut index) =
            (Batch::default(), Batch::default(), Batch::default(), Batch::default());
        for item in self.index.range(low..high).take(PRUNED_PER_PASS) {
            let (key, value) = item?;
            entries += 1;
            for row in serde_json::from_slice::<Vec<Row>>(&value).unwrap_or_default() {
                journeys.remove(row.id.as_bytes());
                open.remove(open_key(row.at, &row.id));
                if let Some(entry) = self.ledger.get(&row.id)?.filter(|e| e.len() > 8) {
                    ledger.insert(row.id.as_bytes(), &entry[..8]);
                }
                removed += 1;
            }
            index.remove(key);
        }
        self.journeys.apply_batch(journeys)?;
        self.open.apply_batch(open)?;
        self.ledger.apply_batch(ledger)?;
        self.index.apply_batch(index)?;
        Ok((removed, entries == PRUNED_PER_PASS))
    }
}

#[cfg(test)]
mod tests;
