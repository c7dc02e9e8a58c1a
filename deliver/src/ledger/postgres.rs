//! The shared ledger of several deliver replicas, in PostgreSQL (`[deliver] ledger_postgres`).
//!
//! A claim is a row with `claimed_by` and `claimed_until` and no `delivered_at`: taken in one
//! statement that only succeeds on a row that is absent, or whose claim lapsed and which was
//! never delivered, so two replicas holding copies of one event never both send it. Delivering
//! sets `delivered_at`; a failed send deletes the claim. The connection is re-made when it drops.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bridge_shared::postgres::{Database, DbError};

use super::Claim;

const MIGRATION: &str = include_str!("../../migrations/0001_ledger.sql");
/// Rows one pruning statement removes at most.
const PRUNE_CHUNK: i64 = 5_000;
const MIGRATION_LOCK: i64 = 0x7665_7262_6f78;

pub struct PgLedger {
    database: Database,
    /// The topology prefix: several pipelines (and tests) can share one database.
    scope: String,
    /// Who holds a claim: this process.
    owner: String,
}

impl PgLedger {
    /// Connects and applies the migration; fails when the database does not answer.
    pub async fn connect(database: Database, scope: &str, owner: &str) -> Result<Self, DbError> {
        let ledger = PgLedger { database, scope: scope.to_owned(), owner: owner.to_owned() };
        ledger.database.migrate(MIGRATION_LOCK, MIGRATION).await?;
        Ok(ledger)
    }

    pub async fn claim(&self, ext_ids: &[&str], claim_for: Duration) -> Result<Vec<Claim>, DbError> {
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
        // `xmax` is non-zero on a row the upsert updated, i.e. a lapsed claim it took over.
        // ext_id → whether it was taken over.
        let taken: HashMap<String, bool> = client
            .query(
                "INSERT INTO bridge_ledger (scope, ext_id, claimed_by, claimed_until)
                 SELECT $1, id, $2, now() + make_interval(secs => $4) FROM unnest($3::text[]) AS id ORDER BY id
                 ON CONFLICT (scope, ext_id) DO UPDATE
                   SET claimed_by = EXCLUDED.claimed_by, claimed_until = EXCLUDED.claimed_until
                   WHERE bridge_ledger.delivered_at IS NULL AND bridge_ledger.claimed_until < now()
                 RETURNING ext_id, xmax::text <> '0'",
                &[&self.scope, &self.owner, &unique, &seconds],
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
            .map(|id| {
                if delivered.contains(*id) {
                    Claim::Delivered
                } else if taken.contains_key(*id) && first.insert(*id) {
                    if taken[*id] {
                        Claim::TakenOver
                    } else {
                        Claim::Mine
                    }
                } else {
                    Claim::Held
                }
            })
            .collect())
    }

    pub async fn record(&self, ext_ids: &[&str]) -> Result<(), DbError> {
        self.database
            .execute(
                "INSERT INTO bridge_ledger (scope, ext_id, delivered_at)
                 SELECT $1, id, now() FROM unnest($2::text[]) AS id ORDER BY id
                 ON CONFLICT (scope, ext_id) DO UPDATE
                   SET delivered_at = now(), claimed_by = NULL, claimed_until = NULL",
                &[&self.scope, &ext_ids],
            )
            .await?;
        Ok(())
    }

    /// Extends this process's claims on `ext_ids` (not delivered ones only).
    /// Returns the ids whose claim was still this process's and had not lapsed.
    pub async fn renew(&self, ext_ids: &[&str], claim_for: Duration) -> Result<HashSet<String>, DbError> {
        let mut sorted = ext_ids.to_vec();
        sorted.sort_unstable();
        Ok(self
            .database
            .query(
                "UPDATE bridge_ledger SET claimed_until = now() + make_interval(secs => $4)
                 WHERE scope = $1 AND ext_id = ANY($2) AND claimed_by = $3 AND delivered_at IS NULL
                   AND claimed_until > now()
                 RETURNING ext_id",
                &[&self.scope, &sorted, &self.owner, &claim_for.as_secs_f64()],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    /// Gives up this process's claims on ids that were not delivered.
    pub async fn release(&self, ext_ids: &[String]) -> Result<(), DbError> {
        self.database
            .execute(
                "DELETE FROM bridge_ledger
                 WHERE scope = $1 AND ext_id = ANY($2) AND claimed_by = $3 AND delivered_at IS NULL",
                &[&self.scope, &ext_ids, &self.owner],
            )
            .await?;
        Ok(())
    }

    /// Removes what was delivered before `cutoff`, and claims that lapsed before it.
    /// In chunks of [`PRUNE_CHUNK`] rows: an hour of a busy pipeline's rows in one statement
    /// would outlast `postgres_timeout` and hold the connection claims share.
    pub async fn prune_before(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<u64, DbError> {
        let cutoff = std::time::SystemTime::from(cutoff);
        let mut removed = 0;
        loop {
            let chunk = self
                .database
                .execute(
                    "DELETE FROM bridge_ledger WHERE ctid IN (
                       SELECT ctid FROM bridge_ledger WHERE scope = $1
                         AND (delivered_at < $2 OR (delivered_at IS NULL AND claimed_until < $2))
                       LIMIT $3)",
                    &[&self.scope, &cutoff, &PRUNE_CHUNK],
                )
                .await?;
            removed += chunk;
            if chunk < PRUNE_CHUNK as u64 {
                return Ok(removed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bridge_shared::postgres::{Postgres, Role, DEFAULT_TIMEOUT};

    use super::*;

    fn database() -> Database {
        Postgres::new(DEFAULT_TIMEOUT).database(&bridge_tests::postgres_url(), Role::Ledger).unwrap()
    }

    fn scope(test: &str) -> String {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        format!("t.{test}.{}.{nanos}", std::process::id())
    }

    #[tokio::test]
    async fn two_replicas_never_both_hold_a_claim_and_a_delivered_id_is_never_claimed() {
        let scope = scope("pg-claims");
        let a = PgLedger::connect(database(), &scope, "replica-a").await.expect("PostgreSQL answers");
        let b = PgLedger::connect(database(), &scope, "replica-b").await.unwrap();
        let long = Duration::from_secs(600);
        assert_eq!(a.claim(&["x", "x", "y"], long).await.unwrap(), vec![Claim::Mine, Claim::Held, Claim::Mine]);
        assert_eq!(b.claim(&["x", "y", "z"], long).await.unwrap(), vec![Claim::Held, Claim::Held, Claim::Mine]);
        b.release(&["x".into()]).await.unwrap();
        assert_eq!(b.claim(&["x"], long).await.unwrap(), vec![Claim::Held], "releasing another's claim does nothing");
        a.release(&["x".into()]).await.unwrap();
        assert_eq!(b.claim(&["x"], long).await.unwrap(), vec![Claim::Mine], "released by its holder");
        b.record(&["x"]).await.unwrap();
        assert_eq!(a.claim(&["x"], long).await.unwrap(), vec![Claim::Delivered]);
        a.release(&["x".into()]).await.unwrap();
        assert_eq!(b.claim(&["x"], long).await.unwrap(), vec![Claim::Delivered], "a release never forgets a delivery");
        // A claim renewed by its holder holds; one whose holder died lapses and is taken over.
        assert_eq!(a.claim(&["v"], Duration::from_secs(30)).await.unwrap(), vec![Claim::Mine]);
        assert!(a.renew(&["v"], long).await.unwrap().contains("v"));
        assert_eq!(b.claim(&["v"], long).await.unwrap(), vec![Claim::Held], "renewed");
        assert!(b.renew(&["v"], Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(b.claim(&["v"], long).await.unwrap(), vec![Claim::Held], "only its holder renews it");
        assert_eq!(a.claim(&["w"], Duration::ZERO).await.unwrap(), vec![Claim::Mine]);
        assert_eq!(b.claim(&["w"], long).await.unwrap(), vec![Claim::TakenOver], "lapsed under its holder");
        let later = chrono::Utc::now() + chrono::Duration::seconds(1);
        assert!(a.prune_before(later).await.unwrap() >= 1, "the delivered x is pruned");
        assert_eq!(a.claim(&["x"], long).await.unwrap(), vec![Claim::Mine], "pruned: no longer known");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_many_replicas_claiming_at_once_exactly_one_wins_each_id() {
        let scope = scope("pg-race");
        let ids: Vec<String> = (0..200).map(|i| format!("vb-{i}")).collect();
        let mut replicas = Vec::new();
        for r in 0..4 {
            replicas.push(Arc::new(PgLedger::connect(database(), &scope, &format!("r{r}")).await.unwrap()));
        }
        let tasks: Vec<_> = replicas
            .iter()
            .map(|ledger| {
                let (ledger, ids) = (ledger.clone(), ids.clone());
                tokio::spawn(async move {
                    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                    ledger.claim(&refs, Duration::from_secs(600)).await.unwrap()
                })
            })
            .collect();
        let mut won = vec![0; ids.len()];
        for task in tasks {
            for (i, claim) in task.await.unwrap().into_iter().enumerate() {
                won[i] += usize::from(claim == Claim::Mine);
            }
        }
        assert!(won.iter().all(|n| *n == 1), "{won:?}");
    }

    #[tokio::test]
    async fn a_renewal_names_only_the_claims_still_held_and_a_lapsed_one_is_not_renewed() {
        let scope = scope("pg-renew");
        let a = PgLedger::connect(database(), &scope, "replica-a").await.expect("PostgreSQL answers");
        let b = PgLedger::connect(database(), &scope, "replica-b").await.unwrap();
        let long = Duration::from_secs(600);
        assert_eq!(a.claim(&["held", "lapsing"], long).await.unwrap(), vec![Claim::Mine, Claim::Mine]);
        assert_eq!(a.claim(&["lapsed"], Duration::ZERO).await.unwrap(), vec![Claim::Mine]);
        assert_eq!(b.claim(&["lapsed"], long).await.unwrap(), vec![Claim::TakenOver], "a copy took it meanwhile");
        let renewed = a.renew(&["held", "lapsed", "never"], long).await.unwrap();
        assert_eq!(renewed, HashSet::from(["held".to_owned()]), "only what is still a's");
        assert_eq!(a.claim(&["lapsing"], Duration::ZERO).await.unwrap(), vec![Claim::Held]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_claiming_overlapping_batches_in_opposite_orders_never_fail_and_one_wins_each() {
        let scope = scope("pg-order");
        let ids: Vec<String> = (0..300).map(|i| format!("vb-{i:03}")).collect();
        let mut tasks = Vec::new();
        for r in 0..4 {
            let ledger = Arc::new(PgLedger::connect(database(), &scope, &format!("r{r}")).await.unwrap());
            let mut mine = ids.clone();
            if r % 2 == 1 {
                mine.reverse();
            }
            tasks.push(tokio::spawn(async move {
                let refs: Vec<&str> = mine.iter().map(String::as_str).collect();
                let claims = ledger.claim(&refs, Duration::from_secs(600)).await.expect("no deadlock, no error");
                ledger.record(&refs[..10]).await.expect("recording in any order takes no deadlock either");
                mine.into_iter().zip(claims).filter(|(_, c)| *c == Claim::Mine).map(|(id, _)| id).collect::<Vec<_>>()
            }));
        }
        let mut won: Vec<String> = Vec::new();
        for task in tasks {
            won.extend(task.await.unwrap());
        }
        won.sort();
        assert_eq!(won, ids, "each id claimed by exactly one replica");
    }
}
