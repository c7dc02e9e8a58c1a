//! The journey of the single-process ledger, in the ledger's own sled database: written in the
//! same flush as a delivered event's ledger entry, so neither outlives the other's loss by more
//! than the step the merge rule drops.
//!
//! Trees: `journey` (event id → the journey as JSON), `journey_time` (integration, accepted at,
//! event id: newest first per integration), `journey_keys` (integration, lookup key, accepted at,
//! event id), `journey_age` (accepted at, event id: what pruning removes first) and `journey_open`
//! (accepted at, event id, of the journeys not ended: what the "lost in the middle" count reads).
//! Every call here blocks: run it on the blocking pool.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use sled::{Batch, Tree};

use super::query::{Cursor, Page, Query, SCANNED_PER_PAGE};
use super::record::{Entry, Journey, Keys};

pub struct LocalJourney {
    journeys: Tree,
    time: Tree,
    keys: Tree,
    age: Tree,
    open: Tree,
    pub contact_keys: Keys,
    /// Merges are read-modify-write: one at a time.
    writing: Mutex<()>,
}

fn stamp(at: DateTime<Utc>) -> [u8; 8] {
    // Before 1970 sorts first; nothing accepted is.
    (at.timestamp_millis().max(0) as u64).to_be_bytes()
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (n, part) in parts.iter().enumerate() {
        if n > 0 {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    key
}

/// The event id at the end of an index key (after the 8-byte stamp).
fn event_id_at_end(key: &[u8], prefix: usize) -> Option<(u64, String)> {
    let rest = key.get(prefix..)?;
    let stamp = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    Some((stamp, String::from_utf8(rest.get(9..)?.to_vec()).ok()?))
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
        Ok(LocalJourney {
            journeys: db.open_tree("journey")?,
            time: db.open_tree("journey_time")?,
            keys: db.open_tree("journey_keys")?,
            age: db.open_tree("journey_age")?,
            open: db.open_tree("journey_open")?,
            contact_keys: Keys::new(&contact_key),
            writing: Mutex::new(()),
        })
    }

    /// Folds `entries` into their journeys (in order), indexing a journey when it starts.
    pub fn write(&self, entries: &[Entry]) -> Result<(), sled::Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let _one_at_a_time = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut touched: HashMap<&str, Journey> = HashMap::new();
        for entry in entries {
            let id = entry.summary.event_id.as_str();
            if !touched.contains_key(id) {
                let stored = self.get(id)?;
                let journey = match stored {
                    Some(journey) => journey,
                    None => {
                        let journey = Journey::new((*entry.summary).clone());
                        self.index(&journey)?;
                        journey
                    }
                };
                touched.insert(id, journey);
            }
            if let Some(journey) = touched.get_mut(id) {
                journey.push(entry.step.clone());
            }
        }
        let mut journeys = Batch::default();
        let mut open = Batch::default();
        for (id, journey) in &touched {
            journeys.insert(id.as_bytes(), serde_json::to_vec(journey).unwrap_or_default());
            let open_key = key(&[&stamp(journey.summary.accepted_at), id.as_bytes()]);
            match journey.end {
                None => open.insert(open_key, journey.summary.integration.as_bytes()),
                Some(_) => open.remove(open_key),
            }
        }
        self.open.apply_batch(open)?;
        self.journeys.apply_batch(journeys)
    }

    fn index(&self, journey: &Journey) -> Result<(), sled::Error> {
        let s = &journey.summary;
        let (integration, at, id) = (s.integration.as_bytes(), stamp(s.accepted_at), s.event_id.as_bytes());
        self.time.insert(key(&[integration, &at, id]), &[])?;
        self.age.insert(key(&[&at, id]), integration)?;
        for lookup in &s.lookups {
            self.keys.insert(key(&[integration, lookup.as_bytes(), &at, id]), &[])?;
        }
        Ok(())
    }

    pub fn get(&self, event_id: &str) -> Result<Option<Journey>, sled::Error> {
        Ok(self.journeys.get(event_id)?.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// Newest first, within the query's bounds; at most [`SCANNED_PER_PAGE`] index entries read.
    pub fn find(&self, q: &Query) -> Result<Page, sled::Error> {
        if let Some(id) = &q.event_id {
            let found = self.get(id)?.filter(|j| q.matches(j));
            return Ok(Page { events: found.into_iter().collect(), next: None });
        }
        let integration = q.integration.as_bytes();
        let (tree, prefix) = match q.lookup(&self.contact_keys) {
            Some(lookup) => (&self.keys, key(&[integration, lookup.as_bytes(), b""])),
            None => (&self.time, key(&[integration, b""])),
        };
        let upper =
            q.upper().map(|c| [prefix.as_slice(), &c.stamp.to_be_bytes(), b"\0", c.event_id.as_bytes()].concat());
        let range = match &upper {
            Some(upper) => tree.range(prefix.clone()..upper.clone()),
            None => tree.scan_prefix(&prefix),
        };
        let mut page = Page::default();
        let (mut scanned, mut last) = (0, None);
        for item in range.rev() {
            let (index_key, _) = item?;
            let Some((at, id)) = event_id_at_end(&index_key, prefix.len()) else { continue };
            if q.from.is_some_and(|from| (at as i64) < from.timestamp_millis()) {
                break;
            }
            if scanned >= SCANNED_PER_PAGE || page.events.len() >= q.limit {
                page.next = last.take();
                break;
            }
            scanned += 1;
            if let Some(journey) = self.get(&id)?.filter(|j| q.matches(j)) {
                page.events.push(journey);
            }
            last = Some(Cursor { stamp: at, event_id: id });
        }
        Ok(page)
    }

    /// The journeys on their way since before `cutoff` (not waiting on purpose), per integration.
    pub fn lost(&self, cutoff: DateTime<Utc>) -> Result<HashMap<String, i64>, sled::Error> {
        let mut lost = HashMap::new();
        for item in self.open.range(..stamp(cutoff).to_vec()) {
            let (open_key, integration) = item?;
            let Some((_, id)) = event_id_at_end(&open_key, 0) else { continue };
            if self.get(&id)?.is_some_and(|j| j.lost_since(cutoff)) {
                *lost.entry(String::from_utf8_lossy(&integration).into_owned()).or_insert(0) += 1;
            }
        }
        Ok(lost)
    }

    /// Removes the journeys accepted before `cutoff`, with their index entries; returns how many.
    pub fn prune_before(&self, cutoff: DateTime<Utc>) -> Result<usize, sled::Error> {
        let _one_at_a_time = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut removed = 0;
        for item in self.age.range(..stamp(cutoff).to_vec()) {
            let (age_key, integration) = item?;
            let Some((at, id)) = event_id_at_end(&age_key, 0) else { continue };
            let at = at.to_be_bytes();
            if let Some(bytes) = self.journeys.remove(id.as_bytes())? {
                let lookups =
                    serde_json::from_slice::<Journey>(&bytes).ok().map(|j| j.summary.lookups).unwrap_or_default();
                for lookup in lookups {
                    self.keys.remove(key(&[&integration, lookup.as_bytes(), &at, id.as_bytes()]))?;
                }
            }
            self.time.remove(key(&[&integration, &at, id.as_bytes()]))?;
            self.open.remove(key(&[&at, id.as_bytes()]))?;
            self.age.remove(age_key)?;
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::*;
    use crate::journey::query::Outcome;

    fn entry(j: &LocalJourney, id: &str, minutes_ago: i64, dialog: &str, phone: &str, outcome: &str) -> Entry {
        Entry::for_tests(&j.contact_keys, id, minutes_ago, dialog, phone, outcome)
    }

    fn ids(page: &Page) -> Vec<&str> {
        page.events.iter().map(|j| j.summary.event_id.as_str()).collect()
    }

    #[test]
    fn journeys_are_found_newest_first_by_dialog_and_contact_a_page_at_a_time_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let j = LocalJourney::open(&db).unwrap();
        j.write(&[
            entry(&j, "a", 30, "1", "79120000001", "retrying"),
            entry(&j, "b", 20, "2", "79120000002", "delivered"),
        ])
        .unwrap();
        j.write(&[
            entry(&j, "c", 10, "1", "79120000001", "dead_lettered"),
            entry(&j, "a", 30, "1", "79120000001", "paused"),
        ])
        .unwrap();
        let all = |q: Query| j.find(&Query { integration: "acme".into(), limit: 10, ..q }).unwrap();
        assert_eq!(ids(&all(Query::default())), ["c", "b", "a"]);
        assert_eq!(ids(&all(Query { dialog: Some("1".into()), ..Query::default() })), ["c", "a"]);
        assert_eq!(ids(&all(Query { contact: Some("+7 912 000-00-02".into()), ..Query::default() })), ["b"]);
        assert_eq!(ids(&all(Query { outcome: Some(Outcome::OnItsWay), ..Query::default() })), ["a"]);
        assert_eq!(j.get("a").unwrap().unwrap().steps.len(), 2, "a second write adds to the journey");
        let first = j.find(&Query { integration: "acme".into(), limit: 2, ..Query::default() }).unwrap();
        assert_eq!(ids(&first), ["c", "b"]);
        let rest = all(Query { before: first.next.clone(), ..Query::default() });
        assert_eq!((ids(&rest), &rest.next), (vec!["a"], &None));
        let other = j.find(&Query { integration: "other".into(), limit: 10, ..Query::default() }).unwrap();
        assert!(other.events.is_empty());
        // "a" waits (paused): not lost; once it retries again, it is.
        assert!(j.lost(Utc::now()).unwrap().is_empty());
        j.write(&[entry(&j, "a", 30, "1", "79120000001", "retrying")]).unwrap();
        assert_eq!(j.lost(Utc::now()).unwrap().get("acme"), Some(&1));
        assert_eq!(j.prune_before(Utc::now() - Duration::minutes(15)).unwrap(), 2);
        assert_eq!(ids(&all(Query::default())), ["c"]);
        assert!(all(Query { dialog: Some("1".into()), ..Query::default() }).events.len() == 1);
        assert!(j.lost(Utc::now()).unwrap().is_empty());
    }
}
