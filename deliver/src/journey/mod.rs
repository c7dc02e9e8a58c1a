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

mod listing;
mod local;
mod postgres;
pub mod query;
pub mod reader;
mod record;
pub mod socket;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bridge_shared::lifecycle::Shutdown;
use bridge_shared::reload::IntegrationsHandle;
use bridge_shared::trace::Trace;
use chrono::Utc;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::sync::{mpsc, oneshot};

pub use self::listing::{journey_table, page_table};
pub use self::local::LocalJourney;
pub use self::postgres::{DeliveredRows, PgJourney, DELIVERED_CTE};
pub use self::record::{masked_item, Entry, Facts, Journey, Keys, Summary};
pub use self::socket::serve_socket;
use crate::pending::Pending;

/// Steps queued for the writer at most; past it a step is dropped (and counted), never waited for.
const QUEUED_AT_MOST: usize = 20_000;
/// Steps one write takes at most.
const WRITE_AT_MOST: usize = 2_000;
/// How long a dead letter's step is waited for before its message is acked anyway.
const DEAD_STEP_WAIT: Duration = Duration::from_secs(2);
/// How often the "lost in the middle" count is taken.
const COUNT_LOST_EVERY: Duration = Duration::from_secs(30);

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

    async fn write(&self, entries: Vec<Entry>) -> Result<(), JourneyError> {
        match self {
            Store::Local(l) => {
                let l = l.clone();
                Ok(tokio::task::spawn_blocking(move || l.write(&entries)).await??)
            }
            Store::Shared(s) => Ok(s.write(&entries).await?),
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

struct Queued {
    entries: Vec<Entry>,
    written: Option<oneshot::Sender<()>>,
}

#[derive(Clone)]
pub struct JourneyMetrics {
    /// Steps not kept, by why (`queue_full`, `write_failed`).
    pub dropped: IntCounterVec,
    /// Events on their way longer than `journey_lost_after`, not waiting on purpose, per integration.
    pub lost: IntGaugeVec,
}

impl JourneyMetrics {
    pub fn new(registry: &Registry) -> Self {
        let dropped = IntCounterVec::new(
            Opts::new("bridge_journey_steps_dropped_total", "Journey steps not kept, by why"),
            &["reason"],
        )
        .expect("valid metric");
        let lost = IntGaugeVec::new(
            Opts::new(
                "bridge_journey_lost",
                "Events neither delivered nor dead-lettered journey_lost_after after ingest took them (not paused or waiting for quota)",
            ),
            &["integration"],
        )
        .expect("valid metric");
        registry.register(Box::new(dropped.clone())).expect("registered once");
        registry.register(Box::new(lost.clone())).expect("registered once");
        JourneyMetrics { dropped, lost }
    }
}

/// deliver's side of the journey: where its steps are written.
pub struct Journal {
    store: Option<Store>,
    queue: mpsc::Sender<Queued>,
    /// This process, named in each step.
    replica: String,
    metrics: JourneyMetrics,
    /// The integrations in force: each has a lost count.
    integrations: IntegrationsHandle,
}

/// What keeps the journal's store up to date: run by [`Journal::work`].
pub struct Writer {
    queue: mpsc::Receiver<Queued>,
}

impl Journal {
    /// `store` none: the journey is off (`journey_keep = 0`), and every step is let go.
    pub fn new(
        store: Option<Store>,
        replica: &str,
        metrics: JourneyMetrics,
        integrations: IntegrationsHandle,
    ) -> (Self, Writer) {
        let (queue, receiver) = mpsc::channel(QUEUED_AT_MOST);
        let journal = Journal { store, queue, replica: replica.to_owned(), metrics, integrations };
        (journal, Writer { queue: receiver })
    }

    pub fn is_on(&self) -> bool {
        self.store.is_some()
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

    /// Queues a step for the writer; never waits.
    pub fn note(&self, entry: Option<Entry>) {
        if let Some(entry) = entry {
            if self.queue.try_send(Queued { entries: vec![entry], written: None }).is_err() {
                self.metrics.dropped.with_label_values(&["queue_full"]).inc();
            }
        }
    }

    /// Queues a step and waits until it is written, [`DEAD_STEP_WAIT`] at most.
    pub async fn note_and_wait(&self, entry: Option<Entry>) {
        let Some(entry) = entry else { return };
        let (written, done) = oneshot::channel();
        if self.queue.try_send(Queued { entries: vec![entry], written: Some(written) }).is_err() {
            self.metrics.dropped.with_label_values(&["queue_full"]).inc();
            return;
        }
        let _ = tokio::time::timeout(DEAD_STEP_WAIT, done).await;
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
            while batch.iter().map(|q| q.entries.len()).sum::<usize>() < WRITE_AT_MOST {
                match writer.queue.try_recv() {
                    Ok(queued) => batch.push(queued),
                    Err(_) => break,
                }
            }
            let entries: Vec<Entry> = batch.iter_mut().flat_map(|q| std::mem::take(&mut q.entries)).collect();
            let count = entries.len() as u64;
            if let Err(error) = store.write(entries).await {
                self.metrics.dropped.with_label_values(&["write_failed"]).inc_by(count);
                tracing::warn!(%error, steps = count, "journey steps not written");
            }
            for queued in batch {
                if let Some(written) = queued.written {
                    let _ = written.send(());
                }
            }
        }
    }

    /// Counts the lost journeys every [`COUNT_LOST_EVERY`] (from the start), and prunes those
    /// older than `keep` every `every`, until `stop`. The count is set for every integration in
    /// force, 0 when none is lost, so "should be 0" is a line on the dashboard, not a gap.
    pub async fn upkeep(self: Arc<Self>, keep: Duration, lost_after: Duration, every: Duration, stop: Shutdown) {
        let Some(store) = self.store.clone() else { return stop.stopped().await };
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        let lost_after = chrono::Duration::from_std(lost_after).unwrap_or(chrono::Duration::MAX);
        let mut next_prune = tokio::time::Instant::now() + every;
        let mut shown: HashSet<String> = HashSet::new();
        loop {
            match store.lost(Utc::now() - lost_after).await {
                Ok(lost) => shown = self.show_lost(lost, shown),
                Err(error) => tracing::warn!(%error, "could not count the journeys lost in the middle"),
            }
            if tokio::time::Instant::now() >= next_prune {
                next_prune += every;
                match store.prune_before(Utc::now() - keep).await {
                    Ok(removed) => tracing::info!(removed, "journeys pruned"),
                    Err(error) => tracing::warn!(%error, "journey pruning failed; will try again"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(COUNT_LOST_EVERY) => {}
                _ = stop.stopped() => return,
            }
        }
    }

    /// Sets `bridge_journey_lost` to `lost` for the integrations in force and those counted, in
    /// place (a scrape never sees the series gone); a series no longer either is removed.
    fn show_lost(&self, mut lost: HashMap<String, i64>, before: HashSet<String>) -> HashSet<String> {
        for integration in self.integrations.current().iter() {
            lost.entry(integration.id.clone()).or_insert(0);
        }
        for (integration, count) in &lost {
            self.metrics.lost.with_label_values(&[integration]).set(*count);
        }
        for gone in before.iter().filter(|id| !lost.contains_key(*id)) {
            let _ = self.metrics.lost.remove_label_values(&[gone]);
        }
        lost.into_keys().collect()
    }
}
