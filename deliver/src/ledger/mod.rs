//! The ledger of delivered ext_ids, and the claims that keep two copies of one event from being
//! sent at once.
//!
//! A copy of an event reaches deliver when Verbox re-sends a webhook, when the spool re-publishes
//! after a lost confirm, or when the broker redelivers after a replica died. The ledger answers
//! "was this delivered?" before a copy is sent, and a claim taken just before the call answers
//! "is a copy of this being sent right now?": a copy that finds a claim waits in a retry queue and
//! then meets the ledger. A claim taken over from a holder that let it lapse is
//! [`Claim::TakenOver`]: that holder may have died between CoMagic's answer and its ledger write.
//! One process keeps both in sled and memory (the default); several replicas share them in
//! PostgreSQL. Entries older than `ledger_keep` are pruned hourly.

mod local;
mod postgres;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bridge_shared::lifecycle::Shutdown;

use self::local::LocalLedger;
use self::postgres::PgLedger;

/// How long a claim holds unless renewed: the courier renews its batch's claims before each call,
/// so this only needs to outlast one call with its short retries (30 s timeout, 5 s of retries).
/// A replica that dies holding claims blocks those events' copies for at most this long.
pub const CLAIM_FOR: Duration = Duration::from_secs(90);

/// What [`Ledger::claim`] found for one ext_id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Claimed for this batch: send it.
    Mine,
    /// Claimed for this batch from a holder whose claim lapsed without a delivery or a release:
    /// it may have died after CoMagic took the event, so ask CoMagic before sending.
    TakenOver,
    /// Already delivered: ack the copy.
    Delivered,
    /// A copy is being sent (by this process or another): wait, then look again.
    Held,
    /// The ledger did not answer: nothing is claimed, so nothing may be sent; wait, then look
    /// again.
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger: {0}")]
    Local(#[from] sled::Error),
    /// The message says what failed, never the database URL (it may hold a password).
    #[error("ledger database: {0}")]
    Shared(#[from] bridge_shared::postgres::DbError),
}

enum Store {
    Local(Arc<LocalLedger>),
    Shared(PgLedger),
}

pub struct Ledger {
    store: Store,
}

impl Ledger {
    /// The single-process ledger in `dir`.
    pub fn open(dir: &Path) -> Result<Self, LedgerError> {
        Ok(Ledger { store: Store::Local(Arc::new(LocalLedger::open(dir)?)) })
    }

    /// The ledger several replicas share, for the topology `scope`; claims are held as `owner`.
    pub async fn connect(
        database: bridge_shared::postgres::Database,
        scope: &str,
        owner: &str,
    ) -> Result<Self, LedgerError> {
        Ok(Ledger { store: Store::Shared(PgLedger::connect(database, scope, owner).await?) })
    }

    /// One [`Claim`] per id, in order; a repeat within `ext_ids` is [`Claim::Held`]. A ledger that
    /// cannot answer claims nothing ([`Claim::Unavailable`]): what cannot be claimed is not sent.
    pub async fn claim(&self, ext_ids: &[&str]) -> Vec<Claim> {
        match &self.store {
            Store::Local(l) => l.claim(ext_ids, CLAIM_FOR),
            Store::Shared(s) => s.claim(ext_ids, CLAIM_FOR).await.unwrap_or_else(|error| {
                tracing::debug!(%error, "could not claim in the ledger; holding the events back");
                vec![Claim::Unavailable; ext_ids.len()]
            }),
        }
    }

    /// Records ext_ids as delivered (durably, before their messages are acked).
    pub async fn record(&self, ext_ids: &[&str]) -> Result<(), LedgerError> {
        match &self.store {
            Store::Local(l) => Ok(l.record(ext_ids).await?),
            Store::Shared(s) => Ok(s.record(ext_ids).await?),
        }
    }

    /// Extends this process's claims on `ext_ids` by [`CLAIM_FOR`] from now (before each call, so
    /// a long quota wait or a slow account does not let a claim lapse under a batch in hand).
    /// Returns the ids still claimed by this process; one whose claim lapsed or was taken, or
    /// any when the ledger does not answer, is not there and must not be sent.
    pub async fn renew(&self, ext_ids: &[&str]) -> HashSet<String> {
        match &self.store {
            Store::Local(l) => l.renew(ext_ids, CLAIM_FOR),
            Store::Shared(s) => s.renew(ext_ids, CLAIM_FOR).await.unwrap_or_else(|error| {
                tracing::debug!(%error, "could not renew claims; holding the events back");
                HashSet::new()
            }),
        }
    }

    /// Gives up this process's claims on ids that were not delivered (delivered ones are kept).
    pub async fn release(&self, ext_ids: &[String]) {
        match &self.store {
            Store::Local(l) => l.release(ext_ids),
            Store::Shared(s) => {
                if let Err(error) = s.release(ext_ids).await {
                    tracing::warn!(%error, "could not release claims; they lapse by themselves");
                }
            }
        }
    }

    async fn prune_before(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<u64, LedgerError> {
        match &self.store {
            Store::Local(l) => {
                // A full scan: on the blocking pool.
                let l = l.clone();
                match tokio::task::spawn_blocking(move || l.prune_before(cutoff)).await {
                    Ok(result) => Ok(result? as u64),
                    Err(_) => Err(LedgerError::Local(sled::Error::ReportableBug("ledger pruning panicked".into()))),
                }
            }
            Store::Shared(s) => Ok(s.prune_before(cutoff).await?),
        }
    }

    /// Prunes every `every` until `stop`.
    pub async fn prune_periodically(self: Arc<Self>, keep: Duration, every: Duration, stop: Shutdown) {
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.stopped() => return,
            }
            match self.prune_before(chrono::Utc::now() - keep).await {
                Ok(removed) => tracing::info!(removed, "ledger pruned"),
                Err(error) => tracing::warn!(%error, "ledger pruning failed; will try again"),
            }
        }
    }
}
