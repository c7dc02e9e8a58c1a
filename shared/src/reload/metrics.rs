//! What a process shows of the integrations it runs: the version of each, each it refused and
//! why, and whether its store answered; the console reads the first two from every process to say
//! whether a save applied everywhere.

use std::collections::HashSet;

use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

use crate::integrations::Integrations;

#[derive(Debug, Clone)]
pub struct ReloadMetrics {
    pub(crate) failures: IntCounter,
    pub(crate) integrations: IntGauge,
    pub(crate) store_up: IntGauge,
    pub(crate) version: IntGaugeVec,
    pub(crate) invalid: IntGaugeVec,
}

impl ReloadMetrics {
    pub fn new(registry: &Registry) -> Self {
        let failures = IntCounter::new(
            "bridge_config_reload_failures_total",
            "Edits of the integrations refused, or reads of their store that failed (the last good set stays)",
        )
        .expect("valid metric");
        let integrations =
            IntGauge::new("bridge_config_integrations", "Integrations in the set in force").expect("valid metric");
        let store_up = IntGauge::new(
            "bridge_integrations_store_up",
            "1 when the integrations' store answered the last read (0: running on the last good set)",
        )
        .expect("valid metric");
        let version = IntGaugeVec::new(
            Opts::new("bridge_integration_version", "1 for the store's version of each integration this process runs"),
            &["integration", "version"],
        )
        .expect("valid metric");
        let invalid = IntGaugeVec::new(
            Opts::new(
                "bridge_integration_invalid",
                "1 for each integration whose stored version this process refused, and why (it runs the last good version, or none)",
            ),
            &["integration", "version", "reason"],
        )
        .expect("valid metric");
        for metric in [&integrations, &store_up] {
            registry.register(Box::new(metric.clone())).expect("registered once");
        }
        for metric in [&version, &invalid] {
            registry.register(Box::new(metric.clone())).expect("registered once");
        }
        registry.register(Box::new(failures.clone())).expect("registered once");
        ReloadMetrics { failures, integrations, store_up, version, invalid }
    }

    /// Shows `set` in place of `before` (a series `set` does not have goes; the others are never
    /// absent in between, so a scrape never sees a process run nothing), and logs each refusal
    /// that is new since `before`.
    pub(super) fn publish(&self, before: &Integrations, set: &Integrations) {
        self.store_up.set(1);
        self.integrations.set(set.len() as i64);
        let versions = |of: &Integrations| -> HashSet<[String; 2]> {
            of.iter().map(|i| [i.id.clone(), of.version(&i.id).unwrap_or_default().to_owned()]).collect()
        };
        let refusals = |of: &Integrations| -> HashSet<[String; 3]> {
            of.refused().map(|(id, r)| [id.to_owned(), r.version.clone(), r.reason.clone()]).collect()
        };
        let (now, then) = (versions(set), versions(before));
        for gone in then.iter().filter(|series| !now.contains(*series)) {
            let _ = self.version.remove_label_values(&[&gone[0], &gone[1]]);
        }
        for series in &now {
            self.version.with_label_values(&[&series[0], &series[1]]).set(1);
        }
        let (now, then) = (refusals(set), refusals(before));
        for gone in then.iter().filter(|series| !now.contains(*series)) {
            let _ = self.invalid.remove_label_values(&[&gone[0], &gone[1], &gone[2]]);
        }
        for (id, refused) in set.refused() {
            self.invalid.with_label_values(&[id, &refused.version, &refused.reason]).set(1);
            if !before.refused().any(|(was, r)| was == id && r == refused) {
                self.failures.inc();
                let running = set.version(id).unwrap_or("none");
                tracing::error!(
                    integration = id,
                    version = %refused.version,
                    reason = %refused.reason,
                    running,
                    "integration not applied; it stays at its last good version (none: not served)"
                );
            }
        }
    }
}
