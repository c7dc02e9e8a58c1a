//! Every event's journey: what became of it, step by step, searchable by tenants and operators
//! (docs/delivery.md, "The journey").
//!
//! The journey lives beside the ledger: in its sled database when deliver runs alone, in
//! PostgreSQL (`bridge_journey`) when replicas share the ledger. A delivered event's journey is
//! written by the ledger's own write of it (the same fsync, or the same statement), so an event
//! CoMagic has is never on its way in its journey, and its `delivered` step is kept once. Other
//! steps (a retry, a park, a dead letter, a copy) are rarer: they go through one writer task that
//! writes whatever has queued in one go, off the event's path; a dead letter's step is waited for
//! (briefly) before its message is acked. Journeys older than `[deliver] journey_keep` are pruned.
//!
//! Read it where it is kept: the console and `deliver events` query PostgreSQL themselves, and ask
//! deliver over its local socket (`socket`) for the sled one, which only deliver may open.

mod brief;
mod listing;
mod local;
mod postgres;
pub mod query;
pub mod reader;
mod record;
pub mod socket;
mod upkeep;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use bridge_shared::reload::IntegrationsHandle;
use bridge_shared::trace::Trace;
use chrono::Utc;
use tokio::sync::mpsc;

pub use self::listing::{journey_table, page_table};
pub use self::local::LocalJourney;
pub use self::postgres::{DeliveredRows, PgJourney, DELIVERED_CTE};
pub use self::record::{masked_item, Entry, Facts, Journey, Keys, Summary};
pub use self::socket::serve_socket;
use self::writer::Queued;
pub use self::writer::Writer;
use crate::pending::Pending;
pub use bridge_shared::journey_metrics::JourneyMetrics;

#[derive(Debug, thiserror::Error)]
pub enum JourneyError {
    #[error("journey: {0}")]
    Local(#[from] sled::Error),
    #[error("journey database: {0}")]
    Shared(#[from] bridge_shared::postgres::DbError),
    #[error("journey: its task on the blocking pool did not finish: {0}")]
    Blocking(#[from] tokio::task::JoinError),
    #[error("journey: no random source for its contact key: {0}")]
    Key(std::io::Error),
    #[error("journey: {0} steps not kept, their rows kept changing under the merge")]
    MergeConflict(usize),
}

/// A new key for the contacts' keyed hash, from the kernel's random source.
fn new_contact_key() -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    Ok(key)
}

#[derive(Clone)]
pub enum Store {
    Local(Arc<LocalJourney>),
    Shared(Arc<PgJourney>),
}

impl Store {
    pub fn keys(&self) -> &Keys {
        match self {
            Store::Local(l) => &l.contact_keys,
            Store::Shared(s) => &s.contact_keys,
        }
    }

    /// Folds `entries` in; `durable`: flushed to disk before it returns (a dead letter's step;
    /// the shared store's every write is).
    async fn write(&self, entries: Vec<Entry>, durable: bool) -> Result<(), JourneyError> {
        match self {
            Store::Local(l) => {
                let l = l.clone();
                Ok(tokio::task::spawn_blocking(move || l.write(&entries, durable)).await??)
            }
            Store::Shared(s) => s.write(&entries).await,
        }
    }

    pub async fn find(&self, q: query::Query) -> Result<query::Page, JourneyError> {
        match self {
            Store::Local(l) => {
                let l = l.clone();
                Ok(tokio::task::spawn_blocking(move || l.find(&q)).await??)
            }
            Store::Shared(s) => Ok(s.find(&q).await?),
        }
    }

    pub async fn get(&self, event_id: String) -> Result<Option<Journey>, JourneyError> {
        match self {
            Store::Local(l) => {
                let l = l.clone();
                Ok(tokio::task::spawn_blocking(move || l.get(&event_id)).await??)
            }
            Store::Shared(s) => Ok(s.get(&event_id).await?),
        }
    }

    async fn lost(&self, cutoff: chrono::DateTime<Utc>) -> Result<HashMap<String, i64>, JourneyError> {
        match self {
            Store::Local(l) => {
                let l = l.clone();
                Ok(tokio::task::spawn_blocking(move || l.lost(cutoff)).await??)
            }
            Store::Shared(s) => Ok(s.lost(cutoff).await?),
        }
    }

    async fn prune_before(&self, cutoff: chrono::DateTime<Utc>) -> Result<u64, JourneyError> {
        match self {
            Store::Local(l) => {
                let l = l.clone();
                Ok(tokio::task::spawn_blocking(move || l.prune_before(cutoff)).await?? as u64)
            }
            Store::Shared(s) => Ok(s.prune_before(cutoff).await?),
        }
    }
}

/// deliver's side of the journey: where its steps are written.
pub struct Journal {
    store: Option<Store>,
    queue: mpsc::Sender<Queued>,
    /// What the queued steps weigh, in bytes (a skipped event's kept webhook counts).
    queued_bytes: AtomicUsize,
    /// The last write failed: a dead letter's step is not waited for meanwhile.
    failing: AtomicBool,
    /// This process, named in each step.
    replica: String,
    metrics: JourneyMetrics,
    /// The integrations in force: each has a lost count.
    integrations: IntegrationsHandle,
}

impl Journal {
    /// `store` none: the journey is off (`journey_keep = 0`), and every step is let go.
    pub fn new(
        store: Option<Store>,
        replica: &str,
        metrics: JourneyMetrics,
        integrations: IntegrationsHandle,
    ) -> (Self, Writer) {
        let (queue, receiver) = mpsc::channel(writer::QUEUED_AT_MOST);
        let (queued_bytes, failing) = (AtomicUsize::new(0), AtomicBool::new(false));
        let journal =
            Journal { store, queue, queued_bytes, failing, replica: replica.to_owned(), metrics, integrations };
        (journal, Writer { queue: receiver })
    }

    /// The entry of `p`'s step `step`, named with this replica; none while the journey is off.
    pub fn entry(&self, p: &Pending, step: Trace) -> Option<Entry> {
        self.entry_of(&Facts::of(p), step)
    }

    /// The entry of a step of the event `facts` tell of (one that became no [`Pending`]).
    pub fn entry_of(&self, facts: &Facts<'_>, mut step: Trace) -> Option<Entry> {
        let store = self.store.as_ref()?;
        step.replica = Some(self.replica.clone());
        Some(Entry::starting(store.keys(), facts, step))
    }
}
