//! The ledger of delivered ext_ids, and the claims that keep two copies of one event from being
//! sent at once.
//!
//! A copy of an event reaches deliver when Verbox re-sends a webhook, when the spool re-publishes
//! after a lost confirm, or when the broker redelivers after a replica died. The ledger answers
//! "was this delivered?" before a copy is sent, and a claim taken just before the call answers
//! "is a copy of this being sent right now?": a copy that finds a claim waits in a retry queue and
//! then meets the ledger again. One process keeps both in sled and memory (the default); several
//! replicas share them in PostgreSQL. Entries older than `ledger_keep` are pruned hourly.
//!
//! # What a claim knows
//! A claim belongs to one batch ([`Hold`]): only that batch renews or releases it, so a batch whose
//! claim lapsed and was taken by a copy (in this process or another) can neither renew nor free the
//! copy's. Right before each call, after any wait for a call slot, the batch renews its claims
//! ([`Ledger::renew`]), and what it no longer holds is not sent. The renewal before an upload also
//! notes that a call starts (`called_at`), and neither a takeover nor a release forgets that, so
//! whoever claims the event next knows whether it may already be at CoMagic: a claim no holder
//! ever called with is [`Claim::Mine`], sent at once; one whose holder called is
//! [`Claim::TakenOver`], in doubt from that call on (CoMagic's report is asked once it can no
//! longer land). A release keeps a claim whose call may have landed (its answer lost, or an earlier
//! holder's call the report has not settled) lapsed instead of deleting it.
//!
//! # Liveness
//! A claim lapses [`CLAIM_FOR`] after its last renewal. On the shared ledger it lapses as soon as
//! its holder's lease does, too: each process renews a lease every [`LEASE_RENEW_EVERY`] for
//! [`LEASE_FOR`], and lets it lapse when it stops, once its batches have settled. So a replica
//! killed with SIGKILL blocks the copies of its events for at most [`LEASE_FOR`], not 90 s.
//! Safety never rests on the lease. A live holder whose lease lapsed (cut off from the database)
//! cannot renew a claim that was taken over, so it does not send it; a call it started had been
//! marked by its renewal, so the copy that takes over asks CoMagic's report first, once that call
//! can no longer land: the renewal's own deadline (`postgres_timeout`, until which the call may
//! still start) plus `comagic_timeout` plus `doubt_margin`. A claim row and a renewal lock each
//! other out, so a takeover either comes first (the renewal fails) or sees the mark.
//!
//! Times in the shared ledger are the database's (`now()`), never the replicas'. The one place the
//! two meet: a takeover's doubt starts at the database's time of the last call and is then measured
//! against the replica's clock, so a replica whose clock runs δ ahead of the database's asks the
//! report δ early (one δ behind asks δ late). Keep the clocks in sync (NTP) well within
//! `doubt_margin`.

mod lease;
mod local;
mod postgres;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bridge_shared::lifecycle::Shutdown;
use chrono::{DateTime, Utc};

use self::local::LocalLedger;
use self::postgres::PgLedger;
use crate::journey::{Entry, LocalJourney};

/// How long a claim holds unless renewed: its batch renews it right before each call, so this
/// only needs to outlast one call (`comagic_timeout` is at most 60 s). A batch that waits longer
/// than this for its turn (a long queue for call slots) may lose the claim to a copy, and its
/// renewal then keeps it from being sent. On the shared ledger a dead holder's claims lapse with
/// its lease ([`LEASE_FOR`]), much sooner; this is the bound for holders without a lease (an
/// earlier release during a rolling update).
pub const CLAIM_FOR: Duration = Duration::from_secs(90);

/// How long a process's lease on the shared ledger holds unless renewed. A replica killed with
/// SIGKILL has its claims taken over this long after its last renewal at most: the copies the
/// broker redelivers at once meet them held for a round or two of the 10 s retry tier, and are
/// then claimed. Long enough that two renewals in a row may time out (each waits up to
/// `postgres_timeout`, 5 s by default) without a live replica's lease lapsing.
pub const LEASE_FOR: Duration = Duration::from_secs(15);

/// How often a process renews its lease: five renewals fit in one [`LEASE_FOR`].
pub const LEASE_RENEW_EVERY: Duration = Duration::from_secs(3);

/// One batch's claims: renewals and releases name it. Taken from [`Ledger::hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold(u64);

/// What [`Ledger::claim`] found for one ext_id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Claimed for this batch, and no earlier holder called CoMagic with it: send it.
    Mine,
    /// Claimed for this batch from a holder that called CoMagic with it and neither delivered it
    /// nor knew the call had failed (it died, or the call's answer was lost): it may be at
    /// CoMagic. No holder started a call of it after `last_call`, so CoMagic's report may be asked
    /// once a call started then can no longer land.
    TakenOver { last_call: DateTime<Utc> },
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
    /// sled's work runs on the blocking pool; this is a task there that panicked or was cancelled.
    #[error("ledger: its task on the blocking pool did not finish: {0}")]
    Blocking(#[from] tokio::task::JoinError),
    /// The message says what failed, never the database URL (it may hold a password).
    #[error("ledger database: {0}")]
    Shared(#[from] bridge_shared::postgres::DbError),
    #[error("{0}")]
    Journey(#[from] crate::journey::JourneyError),
}

enum Store {
    Local(Arc<LocalLedger>),
    Shared(PgLedger),
}

pub struct Ledger {
    store: Store,
    /// The last [`Hold`] handed out.
    holds: AtomicU64,
}

impl Ledger {
    /// The single-process ledger in `dir`.
    pub fn open(dir: &Path) -> Result<Self, LedgerError> {
        Ok(Ledger::of(Store::Local(Arc::new(LocalLedger::open(dir)?))))
    }

    /// The ledger several replicas share, for the topology `scope`; claims are held as `owner`,
    /// which must be unique per process start (its lease is named by it).
    pub async fn connect(
        database: bridge_shared::postgres::Database,
        scope: &str,
        owner: &str,
    ) -> Result<Self, LedgerError> {
        Ok(Ledger::of(Store::Shared(PgLedger::connect(database, scope, owner).await?)))
    }

    fn of(store: Store) -> Self {
        Ledger { store, holds: AtomicU64::new(0) }
    }

    /// A new hold, for one batch's claims.
    pub fn hold(&self) -> Hold {
        Hold(self.holds.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Whether a clean claim ([`Claim::Mine`]) means that no holder, in any process, ever called
    /// CoMagic with the event. True of the shared ledger, whose claims outlive their holders; the
    /// local ledger's claims die with the process, so a redelivery after a restart stays in doubt.
    pub fn knows_every_call(&self) -> bool {
        matches!(self.store, Store::Shared(_))
    }

    /// Claims `ext_ids` for `hold`: one [`Claim`] per id, in order; a repeat within `ext_ids` is
    /// [`Claim::Held`]. A ledger that cannot answer claims nothing ([`Claim::Unavailable`]): what
    /// cannot be claimed is not sent.
    pub async fn claim(&self, hold: Hold, ext_ids: &[&str]) -> Vec<Claim> {
        let claimed = match &self.store {
            Store::Local(l) => l.claim(hold, ext_ids, CLAIM_FOR).await,
            Store::Shared(s) => s.claim(hold, ext_ids, CLAIM_FOR).await.map_err(LedgerError::from),
        };
        claimed.unwrap_or_else(|error| {
            tracing::debug!(%error, "could not claim in the ledger; holding the events back");
            vec![Claim::Unavailable; ext_ids.len()]
        })
    }

    /// Whether a batch holds a claim on `ext_id` now (the local ledger's, for tests).
    #[cfg(test)]
    pub fn claimed_now(&self, ext_id: &str) -> bool {
        match &self.store {
            Store::Local(l) => l.claimed_now(ext_id),
            Store::Shared(_) => unimplemented!("the tests of the shared ledger look at its rows"),
        }
    }

    /// Records ext_ids as delivered (durably, before their messages are acked), and in the same
    /// write their journeys' `delivered` steps (`journeys`: none while the journey is off).
    pub async fn record(&self, ext_ids: &[&str], journeys: Vec<Entry>) -> Result<(), LedgerError> {
        match &self.store {
            Store::Local(l) => l.record(ext_ids, journeys).await,
            Store::Shared(s) => Ok(s.record(ext_ids, &journeys).await?),
        }
    }

    /// The local ledger's journey (in its sled database); none for the shared one, whose journey
    /// has a connection of its own.
    pub fn local_journey(&self) -> Option<Arc<LocalJourney>> {
        match &self.store {
            Store::Local(l) => Some(l.journey.clone()),
            Store::Shared(_) => None,
        }
    }

    /// Right before a call, after any wait for its slot: extends `hold`'s claims on `in_hand` by
    /// [`CLAIM_FOR`], and notes that `calling` (a part of `in_hand`) is being uploaded now. Returns
    /// the ids still claimed by `hold`; one whose claim lapsed or was taken, or any when the
    /// ledger does not answer, is not there and must not be sent.
    pub async fn renew(&self, hold: Hold, in_hand: &[&str], calling: &[&str]) -> HashSet<String> {
        match &self.store {
            Store::Local(l) => l.renew(hold, in_hand, calling, CLAIM_FOR),
            Store::Shared(s) => s.renew(hold, in_hand, calling, CLAIM_FOR).await.unwrap_or_else(|error| {
                tracing::debug!(%error, "could not renew claims; holding the events back");
                HashSet::new()
            }),
        }
    }

    /// Gives up `hold`'s claims on ids that were not delivered (delivered ones are kept). A claim
    /// whose event may be at CoMagic (`may_be_there`: a call whose answer was lost, an earlier
    /// holder's call CoMagic's report has not settled) is left lapsed with its last call noted, so
    /// whoever claims it next is [`Claim::TakenOver`] and asks first; the others are forgotten.
    pub async fn release(&self, hold: Hold, ext_ids: &[String], may_be_there: &HashSet<String>) {
        let (kept, forgotten): (Vec<&str>, Vec<&str>) =
            ext_ids.iter().map(String::as_str).partition(|id| may_be_there.contains(*id));
        match &self.store {
            Store::Local(l) => l.release(hold, &kept, &forgotten),
            Store::Shared(s) => {
                if let Err(error) = s.release(hold, &kept, &forgotten).await {
                    tracing::warn!(%error, "could not release claims; copies of those events wait until the claims lapse (CLAIM_FOR)");
                }
            }
        }
    }

    /// Keeps this process's lease on the shared ledger alive until `stop` (nothing to keep for the
    /// local ledger). Stop it only once no batch is in hand, then [`Ledger::let_lease_lapse`].
    pub async fn hold_lease(self: Arc<Self>, stop: Shutdown) {
        match &self.store {
            Store::Local(_) => stop.stopped().await,
            Store::Shared(s) => s.hold_lease(stop).await,
        }
    }

    /// At a graceful stop, once every batch has settled: what this process still claims (a
    /// release that did not reach the database) may be taken over at once.
    pub async fn let_lease_lapse(&self) {
        if let Store::Shared(s) = &self.store {
            if let Err(error) = s.let_lease_lapse().await {
                tracing::warn!(%error, "could not end the ledger lease; it lapses by itself");
            }
        }
    }

    async fn prune_before(&self, cutoff: DateTime<Utc>) -> Result<u64, LedgerError> {
        match &self.store {
            Store::Local(l) => {
                // A full scan: on the blocking pool.
                let l = l.clone();
                Ok(tokio::task::spawn_blocking(move || l.prune_before(cutoff)).await?? as u64)
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
            match self.prune_before(Utc::now() - keep).await {
                Ok(removed) => tracing::info!(removed, "ledger pruned"),
                Err(error) => tracing::warn!(%error, "ledger pruning failed; will try again"),
            }
        }
    }
}
