//! The journey's upkeep: the "lost in the middle" count every [`COUNT_LOST_EVERY`], and pruning
//! past `journey_keep`. Each step gives way to a stop at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bridge_shared::lifecycle::Shutdown;
use chrono::Utc;

use super::Journal;

/// How often the "lost in the middle" count is taken.
const COUNT_LOST_EVERY: Duration = Duration::from_secs(30);

impl Journal {
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
            let counted = tokio::select! {
                counted = store.lost(Utc::now() - lost_after) => counted,
                _ = stop.stopped() => return,
            };
            match counted {
                Ok(lost) => shown = self.show_lost(lost, shown),
                Err(error) => tracing::warn!(%error, "could not count the journeys lost in the middle"),
            }
            if tokio::time::Instant::now() >= next_prune {
                next_prune += every;
                let pruned = tokio::select! {
                    pruned = store.prune_before(Utc::now() - keep) => pruned,
                    _ = stop.stopped() => return,
                };
                match pruned {
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
