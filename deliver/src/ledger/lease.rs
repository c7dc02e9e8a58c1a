//! This process's lease on the shared ledger (`bridge_ledger_holders`): a row naming the process,
//! alive until a time the process keeps pushing forward. A claim whose holder's lease lapsed may be
//! taken over at once, so the events a killed replica held are sent again within [`LEASE_FOR`]
//! instead of when its claims lapse. Every time is the database's (`now()`).
//!
//! The lease is taken at connect, before any claim, renewed every [`LEASE_RENEW_EVERY`] until the
//! process stops, and at a graceful stop, once every batch has settled, made to lapse at once. The
//! row is kept (lapsed), not deleted: a claim whose holder has no lease row is taken to be of an
//! earlier release, which holds a claim until it lapses, and pruning removes old rows.

use bridge_shared::lifecycle::Shutdown;
use bridge_shared::postgres::DbError;
use tokio::time::MissedTickBehavior;

use super::postgres::PgLedger;
use super::{LEASE_FOR, LEASE_RENEW_EVERY};

impl PgLedger {
    /// Pushes this process's lease to [`LEASE_FOR`] from now (taking it if there is none).
    pub async fn renew_lease(&self) -> Result<(), DbError> {
        self.database
            .execute(
                "INSERT INTO bridge_ledger_holders (scope, owner, alive_until)
                 VALUES ($1, $2, now() + make_interval(secs => $3))
                 ON CONFLICT (scope, owner) DO UPDATE SET alive_until = EXCLUDED.alive_until",
                &[&self.scope, &self.owner, &LEASE_FOR.as_secs_f64()],
            )
            .await?;
        Ok(())
    }

    /// Renews the lease every [`LEASE_RENEW_EVERY`] until `stop`. A renewal that fails is logged
    /// once per outage (the database's own state is in `bridge_postgres_up{role="ledger"}`): the
    /// claims of this process may then be taken over, and what it no longer holds it does not send.
    pub async fn hold_lease(&self, stop: Shutdown) {
        // Ticks at a steady pace: a renewal that waited for its deadline does not push the next
        // one further out.
        let mut tick = tokio::time::interval(LEASE_RENEW_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.stopped() => return,
            }
            // A renewal that waits on a silent database does not hold the stop up.
            let renewed = tokio::select! {
                renewed = self.renew_lease() => renewed,
                _ = stop.stopped() => return,
            };
            match renewed {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("the ledger lease is renewed again");
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "could not renew this process's ledger lease; once it lapses, copies may take its claims over");
                }
                Err(_) => {}
            }
        }
    }

    /// Lets the lease lapse now: what this process still claims may be taken over at once.
    pub async fn let_lease_lapse(&self) -> Result<(), DbError> {
        self.database
            .execute(
                "UPDATE bridge_ledger_holders SET alive_until = now() WHERE scope = $1 AND owner = $2",
                &[&self.scope, &self.owner],
            )
            .await?;
        Ok(())
    }
}
