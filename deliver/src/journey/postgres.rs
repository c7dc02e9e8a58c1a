//! The journey of the shared ledger, in PostgreSQL beside it (`bridge_journey`, migration 0003):
//! a row per event with the journey as JSON, its lookup keys in a GIN-indexed array, its accepted
//! time indexed per integration (newest first) and as a BRIN range (pruning). A delivered event's
//! row is written by the ledger's own statement ([`DELIVERED_CTE`]), so the two cannot disagree;
//! other steps are merged here by the one Rust rule ([`Journey::push`]), a row's `version`
//! guarding the read-modify-write against a concurrent writer.

use std::collections::HashMap;

use bridge_shared::postgres::{Database, DbError};
use chrono::{DateTime, Utc};

use super::query::{Page, Query, MAX_LIMIT};
use super::record::{Entry, Journey, Keys, NOT_LOST};

const MIGRATION: &str = include_str!("../../migrations/0003_journey.sql");
/// The ledger's migration lock: the journey's table is made under it too.
use bridge_shared::postgres::LEDGER_MIGRATION_LOCK as MIGRATION_LOCK;
/// Rounds of a merge that met concurrent writers before its steps are given up (logged).
const MERGE_ROUNDS: usize = 3;

/// The part of the ledger's delivered statement that writes the journeys ($3.. its columns, from
/// [`DeliveredRows`]); a journey delivered before is left as it is.
pub const DELIVERED_CTE: &str = "
  INSERT INTO bridge_journey AS j (scope, event_id, integration, accepted_ms, lookups, end_kind, last_kind, version, journey)
  SELECT $1, e, i, a, string_to_array(l, chr(31)), 'delivered', 'delivered', 1, d::jsonb
    FROM unnest($3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[]) AS t(e, i, a, l, d) ORDER BY e
  ON CONFLICT (scope, event_id) DO UPDATE SET
    journey = CASE WHEN jsonb_typeof(j.journey) <> 'object' THEN EXCLUDED.journey ELSE
              jsonb_set(jsonb_set(jsonb_set(j.journey, '{steps}',
                COALESCE(CASE WHEN jsonb_typeof(j.journey->'steps') = 'array' THEN j.journey->'steps' END, '[]'::jsonb)
                  || (EXCLUDED.journey->'steps')),
              '{end}', '\"delivered\"'), '{last}', '\"delivered\"') END,
    end_kind = 'delivered', last_kind = 'delivered', version = j.version + 1
  WHERE j.end_kind IS DISTINCT FROM 'delivered'";

/// A batch of delivered journeys as the columns of [`DELIVERED_CTE`].
#[derive(Default)]
pub struct DeliveredRows {
    pub event_ids: Vec<String>,
    pub integrations: Vec<String>,
    pub accepted_ms: Vec<i64>,
    pub lookups: Vec<String>,
    pub journeys: Vec<String>,
}

impl DeliveredRows {
    pub fn of(entries: &[Entry]) -> Self {
        let mut rows = DeliveredRows::default();
        for entry in entries {
            let mut journey = Journey::new((*entry.summary).clone());
            journey.push(entry.step.clone());
            rows.push(&journey);
        }
        rows
    }

    fn push(&mut self, journey: &Journey) {
        let s = &journey.summary;
        self.event_ids.push(s.event_id.clone());
        self.integrations.push(s.integration.clone());
        self.accepted_ms.push(s.accepted_at.timestamp_millis());
        self.lookups.push(s.lookups.join("\u{1f}"));
        self.journeys.push(serde_json::to_string(journey).unwrap_or_default());
    }
}

pub struct PgJourney {
    database: Database,
    scope: String,
    pub contact_keys: Keys,
}

impl PgJourney {
    /// On its own connection (the ledger's carries the claims): makes the journey's table (an
    /// idempotent migration, under the ledger's lock) and its contact key, should they be missing.
    pub async fn connect(database: Database, scope: &str) -> Result<Self, super::JourneyError> {
        database.migrate(MIGRATION_LOCK, MIGRATION).await?;
        let key = super::new_contact_key().map_err(super::JourneyError::Key)?;
        database
            .execute(
                "INSERT INTO bridge_journey_key (scope, key) VALUES ($1, $2) ON CONFLICT (scope) DO NOTHING",
                &[&scope, &key],
            )
            .await?;
        let row = database.query_opt("SELECT key FROM bridge_journey_key WHERE scope = $1", &[&scope]).await?;
        let key: Vec<u8> = row.map(|r| r.get(0)).unwrap_or(key);
        Ok(PgJourney { database, scope: scope.to_owned(), contact_keys: Keys::new(&key) })
    }

    /// Folds `entries` into their journeys, in order.
    pub async fn write(&self, entries: &[Entry]) -> Result<(), super::JourneyError> {
        let mut by_event: HashMap<&str, Vec<&Entry>> = HashMap::new();
        for entry in entries {
            by_event.entry(entry.summary.event_id.as_str()).or_default().push(entry);
        }
        for _ in 0..MERGE_ROUNDS {
            let ids: Vec<&str> = by_event.keys().copied().collect();
            // A row whose JSON does not read (written by hand, or by a release that is gone) starts
            // again from its steps here, at its version.
            let stored: HashMap<String, (i64, Option<Journey>)> = self
                .database
                .query(
                    "SELECT event_id, version, journey::text FROM bridge_journey WHERE scope = $1 AND event_id = ANY($2)",
                    &[&self.scope, &ids],
                )
                .await?
                .into_iter()
                .map(|r| (r.get(0), (r.get(1), serde_json::from_str::<Journey>(r.get::<_, &str>(2)).ok())))
                .collect();
            let (mut rows, mut versions) = (DeliveredRows::default(), Vec::new());
            let mut ends = Vec::new();
            for (id, steps) in &by_event {
                let fresh = || Journey::new((*steps[0].summary).clone());
                let (version, mut journey) = match stored.get(*id) {
                    Some((version, journey)) => (*version, journey.clone().unwrap_or_else(fresh)),
                    None => (0, fresh()),
                };
                for entry in steps {
                    journey.push(entry.step.clone());
                }
                versions.push(version);
                ends.push((journey.end.clone(), journey.last.clone()));
                rows.push(&journey);
            }
            let (end_kinds, lasts): (Vec<Option<String>>, Vec<String>) = ends.into_iter().unzip();
            let written: Vec<String> = self
                .database
                .query(
                    "INSERT INTO bridge_journey AS j (scope, event_id, integration, accepted_ms, lookups, end_kind, last_kind, version, journey)
                     SELECT $1, e, i, a, string_to_array(l, chr(31)), k, s, v + 1, d::jsonb
                       FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[])
                         AS t(e, i, a, l, d, k, s, v) ORDER BY e
                     ON CONFLICT (scope, event_id) DO UPDATE SET journey = EXCLUDED.journey, end_kind = EXCLUDED.end_kind,
                       last_kind = EXCLUDED.last_kind, version = EXCLUDED.version
                     WHERE j.version = EXCLUDED.version - 1
                     RETURNING event_id",
                    &[&self.scope, &rows.event_ids, &rows.integrations, &rows.accepted_ms, &rows.lookups, &rows.journeys, &end_kinds, &lasts, &versions],
                )
                .await?
                .into_iter()
                .map(|r| r.get(0))
                .collect();
            for id in &written {
                by_event.remove(id.as_str());
            }
            if by_event.is_empty() {
                return Ok(());
            }
        }
        let steps: usize = by_event.values().map(Vec::len).sum();
        tracing::warn!(events = by_event.len(), "journey steps not kept: their rows kept changing under the merge");
        Err(super::JourneyError::MergeConflict(steps))
    }

    pub async fn get(&self, event_id: &str) -> Result<Option<Journey>, DbError> {
        let row = self
            .database
            .query_opt(
                "SELECT journey::text FROM bridge_journey WHERE scope = $1 AND event_id = $2",
                &[&self.scope, &event_id],
            )
            .await?;
        Ok(row.and_then(|r| serde_json::from_str(r.get::<_, &str>(0)).ok()))
    }

    pub async fn find(&self, q: &Query) -> Result<Page, DbError> {
        if let Some(id) = &q.event_id {
            let found = self.get(id).await?.filter(|j| q.matches(j));
            return Ok(Page { events: found.into_iter().collect(), next: None });
        }
        let lookup = q.lookup(&self.contact_keys);
        let upper = q.upper();
        let (before_ms, before_id) = upper.map_or((i64::MAX, String::new()), |c| (c.stamp as i64, c.event_id));
        let from_ms = q.from.map_or(i64::MIN, |f| f.timestamp_millis());
        let outcome = q.outcome.map(|o| serde_json::to_value(o).ok().and_then(|v| v.as_str().map(str::to_owned)));
        let limit = q.limit.min(MAX_LIMIT) as i64 + 1;
        let rows = self
            .database
            .query(
                "SELECT journey::text FROM bridge_journey
                  WHERE scope = $1 AND integration = $2 AND ($3::text IS NULL OR lookups @> ARRAY[$3::text])
                    AND accepted_ms >= $4 AND (accepted_ms < $5 OR (accepted_ms = $5 AND $6 <> '' AND event_id < $6))
                    AND ($7::text IS NULL OR ($7 = 'on_its_way' AND end_kind IS NULL) OR end_kind = $7)
                  ORDER BY accepted_ms DESC, event_id DESC LIMIT $8",
                &[&self.scope, &q.integration, &lookup, &from_ms, &before_ms, &before_id, &outcome.flatten(), &limit],
            )
            .await?;
        let mut events: Vec<Journey> = rows
            .iter()
            .filter_map(|r| serde_json::from_str(r.get::<_, &str>(0)).ok())
            .filter(|j| q.matches(j))
            .collect();
        Ok(super::query::paged(&mut events, q.limit))
    }

    /// The journeys on their way since before `cutoff` (not waiting on purpose), per integration.
    pub async fn lost(&self, cutoff: DateTime<Utc>) -> Result<HashMap<String, i64>, DbError> {
        let waiting: Vec<&str> = NOT_LOST.to_vec();
        let rows = self
            .database
            .query(
                "SELECT integration, count(*) FROM bridge_journey
                  WHERE scope = $1 AND end_kind IS NULL AND accepted_ms < $2 AND last_kind <> ALL($3) GROUP BY integration",
                &[&self.scope, &cutoff.timestamp_millis(), &waiting],
            )
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Removes the journeys accepted before `cutoff`, in chunks; returns how many.
    pub async fn prune_before(&self, cutoff: DateTime<Utc>) -> Result<u64, DbError> {
        let cutoff = cutoff.timestamp_millis();
        self.database
            .delete_in_chunks(
                "DELETE FROM bridge_journey WHERE ctid IN (
                   SELECT ctid FROM bridge_journey WHERE scope = $1 AND accepted_ms < $2 LIMIT $3)",
                &[&self.scope, &cutoff],
            )
            .await
    }
}
