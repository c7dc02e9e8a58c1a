//! The shared ledger of several deliver replicas, in PostgreSQL (`[deliver] ledger_postgres`).
//!
//! A claim is a row with `claimed_by` (the process), `claim_id` (its batch) and `claimed_until`,
//! and no `delivered_at`: taken in one statement that only succeeds on a row that is absent, or
//! never delivered and free (released, lapsed, or its holder's lease lapsed, see the `lease` module),
//! so two replicas holding copies of one event never both send it. The statement keeps the row's
//! `called_at`, and returns it: whether an earlier holder may have called CoMagic with it. A holder
//! with no lease row (a release before leases, which never notes its calls) is taken over only once
//! its claim lapsed, as called at `claimed_until`. Delivering sets `delivered_at`; a failed send
//! deletes the claim, or leaves it lapsed when the call may have landed. The connection is re-made
//! when it drops.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use bridge_shared::postgres::{Database, DbError};
use chrono::{DateTime, Utc};

use super::{Claim, Hold};
use crate::journey::{DeliveredRows, Entry, DELIVERED_CTE};

const MIGRATIONS: [&str; 2] =
    [include_str!("../../migrations/0001_ledger.sql"), include_str!("../../migrations/0002_ledger_holders.sql")];
use bridge_shared::postgres::LEDGER_MIGRATION_LOCK as MIGRATION_LOCK;

pub struct PgLedger {
    pub(super) database: Database,
    /// The topology prefix: several pipelines (and tests) can share one database.
    pub(super) scope: String,
    /// Who holds a claim: this process (unique per start; its lease is named by it).
    pub(super) owner: String,
}

impl PgLedger {
    /// Connects, applies the migrations (in order, in one transaction) and takes this process's
    /// lease; fails when the database does not answer.
    pub async fn connect(database: Database, scope: &str, owner: &str) -> Result<Self, DbError> {
        let ledger = PgLedger { database, scope: scope.to_owned(), owner: owner.to_owned() };
        ledger.database.migrate(MIGRATION_LOCK, &MIGRATIONS.concat()).await?;
        // Before any claim: a claim of an owner with no lease holds until it lapses (90 s).
        ledger.renew_lease().await?;
        Ok(ledger)
    }

    pub async fn claim(&self, hold: Hold, ext_ids: &[&str], claim_for: Duration) -> Result<Vec<Claim>, DbError> {
        // One row per id in a statement: a repeat in the batch is a copy, held.
        let mut unique: Vec<&str> = Vec::new();
        let mut seen = HashSet::new();
        for id in ext_ids {
            if seen.insert(*id) {
                unique.push(id);
            }
        }
        let client = &self.database;
        let seconds = claim_for.as_secs_f64();
        // ext_id → the last call an earlier holder noted, for the ids claimed.
        let taken: HashMap<String, Option<SystemTime>> = client
            .query(
                "INSERT INTO bridge_ledger AS l (scope, ext_id, claimed_by, claim_id, claimed_until)
                 SELECT $1, id, $2, $5, now() + make_interval(secs => $4)
                   FROM unnest($3::text[]) AS id ORDER BY id
                 ON CONFLICT (scope, ext_id) DO UPDATE
                   SET claimed_by = EXCLUDED.claimed_by, claim_id = EXCLUDED.claim_id,
                       claimed_until = EXCLUDED.claimed_until,
                       called_at = CASE WHEN l.claimed_by IS NULL OR EXISTS (
                           SELECT 1 FROM bridge_ledger_holders h WHERE h.scope = l.scope AND h.owner = l.claimed_by)
                         THEN l.called_at ELSE GREATEST(l.called_at, l.claimed_until) END
                   WHERE l.delivered_at IS NULL AND (l.claimed_by IS NULL OR l.claimed_until < now() OR EXISTS (
                     SELECT 1 FROM bridge_ledger_holders h
                      WHERE h.scope = l.scope AND h.owner = l.claimed_by AND h.alive_until < now()))
                 RETURNING ext_id, called_at",
                &[&self.scope, &self.owner, &unique, &seconds, &hold_id(hold)],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let others: Vec<&str> = unique.iter().copied().filter(|id| !taken.contains_key(*id)).collect();
        let delivered: HashSet<String> = if others.is_empty() {
            HashSet::new()
        } else {
            client
                .query(
                    "SELECT ext_id FROM bridge_ledger
                     WHERE scope = $1 AND ext_id = ANY($2) AND delivered_at IS NOT NULL",
                    &[&self.scope, &others],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect()
        };
        let mut first = HashSet::new();
        Ok(ext_ids
            .iter()
            .map(|id| match taken.get(*id) {
                _ if delivered.contains(*id) => Claim::Delivered,
                Some(called_at) if first.insert(*id) => match called_at {
                    Some(called_at) => Claim::TakenOver { last_call: self.latest_call_start(*called_at) },
                    None => Claim::Mine,
                },
                _ => Claim::Held,
            })
            .collect())
    }

    /// The latest moment a holder whose renewal noted a call at `called_at` may have started it:
    /// it calls once its renewal answered, within the renewal's deadline (`postgres_timeout`; the
    /// replicas share one). Later than that, the renewal failed and nothing was sent.
    fn latest_call_start(&self, called_at: SystemTime) -> DateTime<Utc> {
        DateTime::<Utc>::from(called_at) + chrono::Duration::from_std(self.database.deadline()).unwrap_or_default()
    }

    /// Records `ext_ids` delivered, and in the same statement their journeys' `delivered` steps.
    pub async fn record(&self, ext_ids: &[&str], journeys: &[Entry]) -> Result<(), DbError> {
        const LEDGER: &str = "INSERT INTO bridge_ledger (scope, ext_id, delivered_at)
                 SELECT $1, id, now() FROM unnest($2::text[]) AS id ORDER BY id
                 ON CONFLICT (scope, ext_id) DO UPDATE
                   SET delivered_at = now(), claimed_by = NULL, claim_id = NULL, claimed_until = NULL";
        if journeys.is_empty() {
            self.database.execute(LEDGER, &[&self.scope, &ext_ids]).await?;
            return Ok(());
        }
        let rows = DeliveredRows::of(journeys);
        let sql = format!("WITH journeys AS ({DELIVERED_CTE}) {LEDGER}");
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
            &self.scope,
            &ext_ids,
            &rows.event_ids,
            &rows.integrations,
            &rows.accepted_ms,
            &rows.lookups,
            &rows.journeys,
        ];
        self.database.execute(&sql, &params).await?;
        Ok(())
    }

    /// Extends `hold`'s claims on `in_hand` (not delivered ones only), and notes a call of
    /// `calling` now. Returns the ids whose claim was still `hold`'s and had not lapsed.
    pub async fn renew(
        &self,
        hold: Hold,
        in_hand: &[&str],
        calling: &[&str],
        claim_for: Duration,
    ) -> Result<HashSet<String>, DbError> {
        let mut sorted = in_hand.to_vec();
        sorted.sort_unstable();
        Ok(self
            .database
            .query(
                "UPDATE bridge_ledger SET claimed_until = now() + make_interval(secs => $5),
                   called_at = CASE WHEN ext_id = ANY($6) THEN now() ELSE called_at END
                 WHERE scope = $1 AND ext_id = ANY($2) AND claimed_by = $3 AND claim_id = $4
                   AND delivered_at IS NULL AND claimed_until > now()
                 RETURNING ext_id",
                &[&self.scope, &sorted, &self.owner, &hold_id(hold), &claim_for.as_secs_f64(), &calling],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    /// Gives up `hold`'s claims on ids that were not delivered: those of `kept` that a holder
    /// called with stay as lapsed rows keeping `called_at`, the others are deleted.
    pub async fn release(&self, hold: Hold, kept: &[&str], forgotten: &[&str]) -> Result<(), DbError> {
        if kept.is_empty() && forgotten.is_empty() {
            return Ok(());
        }
        self.database
            .execute(
                "WITH lapsed AS (
                   UPDATE bridge_ledger SET claimed_by = NULL, claim_id = NULL, claimed_until = now()
                   WHERE scope = $1 AND ext_id = ANY($4) AND claimed_by = $2 AND claim_id = $3
                     AND delivered_at IS NULL AND called_at IS NOT NULL)
                 DELETE FROM bridge_ledger
                 WHERE scope = $1 AND claimed_by = $2 AND claim_id = $3 AND delivered_at IS NULL
                   AND (ext_id = ANY($5) OR (ext_id = ANY($4) AND called_at IS NULL))",
                &[&self.scope, &self.owner, &hold_id(hold), &kept, &forgotten],
            )
            .await?;
        Ok(())
    }

    /// Removes what was delivered before `cutoff`, claims that lapsed before it, and the leases
    /// of processes gone since before it.
    /// In chunks ([`Database::delete_in_chunks`]): an hour of a busy pipeline's rows in one statement
    /// would outlast `postgres_timeout` and hold the connection claims share.
    pub async fn prune_before(&self, cutoff: DateTime<Utc>) -> Result<u64, DbError> {
        let cutoff = SystemTime::from(cutoff);
        self.database
            .execute("DELETE FROM bridge_ledger_holders WHERE scope = $1 AND alive_until < $2", &[&self.scope, &cutoff])
            .await?;
        self.database
            .delete_in_chunks(
                "DELETE FROM bridge_ledger WHERE ctid IN (
                   SELECT ctid FROM bridge_ledger WHERE scope = $1
                     AND (delivered_at < $2 OR (delivered_at IS NULL AND claimed_until < $2))
                   LIMIT $3)",
                &[&self.scope, &cutoff],
            )
            .await
    }
}

/// A hold as its column stores it.
fn hold_id(hold: Hold) -> i64 {
    hold.0 as i64
}

#[cfg(test)]
mod journey_tests;
#[cfg(test)]
mod tests;
