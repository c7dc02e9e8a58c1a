//! The integrations in force, kept current without a restart: from `integrations.toml` (re-read
//! when its modification time changes, or on SIGHUP) or from the PostgreSQL store (re-read on
//! each change it notifies). The set is taken one integration at a time: one that does not
//! validate here (a `*_env` variable this process lacks) stays at its last good version, or absent
//! if it never had one, while every other change applies; it is logged and shows in
//! `bridge_integration_invalid`, and the version each integration runs at in
//! `bridge_integration_version`, which the console reads to say whether a save reached every
//! process. A store that cannot be read, or a file that does not parse, keeps the whole last good
//! set in force (at start-up: the process refuses to start).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

use crate::integrations::store::{Location, Store, StoreError};
use crate::integrations::Integrations;
use crate::lifecycle::Shutdown;

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

    /// Shows `set` (the series of integrations that left it go), and logs each refusal that is
    /// new since `before`.
    fn publish(&self, before: &Integrations, set: &Integrations) {
        self.store_up.set(1);
        self.integrations.set(set.len() as i64);
        self.version.reset();
        for integration in set.iter() {
            let version = set.version(&integration.id).unwrap_or_default();
            self.version.with_label_values(&[&integration.id, version]).set(1);
        }
        self.invalid.reset();
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

/// How often the PostgreSQL store is re-read even without a notification, and how long a lost
/// database connection waits before it is tried again.
const STORE_RECHECK: Duration = Duration::from_secs(30);
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The integrations in force; cheap to clone and to read on every request.
#[derive(Clone)]
pub struct IntegrationsHandle {
    current: Arc<RwLock<Arc<Integrations>>>,
    store: Arc<Store>,
    metrics: ReloadMetrics,
    /// When the last read asked for by [`Self::current_after`] began; one such read at a time.
    read_on_demand: Arc<tokio::sync::Mutex<Instant>>,
}

fn environment() -> HashMap<String, String> {
    std::env::vars().collect()
}

impl IntegrationsHandle {
    /// Opens the store and reads it; at start-up a set that does not validate, or a store that
    /// does not answer, is an error (the process refuses to start). A PostgreSQL store reports
    /// to `postgres`.
    pub async fn open(
        location: &Location,
        metrics: ReloadMetrics,
        postgres: &crate::postgres::Postgres,
    ) -> Result<Self, StoreError> {
        let store = Store::open_with(location, postgres).await?;
        let set = Integrations::applying(store.list().await?, &environment(), &Integrations::default());
        metrics.publish(&Integrations::default(), &set);
        Ok(IntegrationsHandle {
            current: Arc::new(RwLock::new(Arc::new(set))),
            store: Arc::new(store),
            metrics,
            read_on_demand: Arc::new(tokio::sync::Mutex::new(Instant::now())),
        })
    }

    pub fn current(&self) -> Arc<Integrations> {
        self.current.read().expect("never poisoned: writers do not panic").clone()
    }

    /// The set as the store holds it at or after `since`: re-read now, unless a read that began
    /// after `since` already happened. For a message naming an integration this process does not
    /// know: it may have been created a moment ago, and another process's watcher read the store
    /// first (ingest accepts a webhook only for an integration it knows). Misses that come together
    /// share one read.
    pub async fn current_after(&self, since: Instant) -> Arc<Integrations> {
        let mut last_read = self.read_on_demand.lock().await;
        if *last_read <= since {
            let started = Instant::now();
            self.reload().await;
            *last_read = started;
        }
        self.current()
    }

    /// Re-reads the store: what validates applies, what does not stays at its last good version;
    /// a store that cannot be read keeps the last good set in force.
    async fn reload(&self) {
        match self.store.list().await {
            Ok(stored) => {
                let before = self.current();
                let set = Integrations::applying(stored, &environment(), &before);
                self.metrics.publish(&before, &set);
                *self.current.write().expect("never poisoned") = Arc::new(set);
                tracing::info!("integrations reloaded");
            }
            Err(error) => {
                let unreachable = matches!(error, StoreError::Database(_) | StoreError::File(_));
                self.metrics.store_up.set(i64::from(!unreachable));
                self.metrics.failures.inc();
                tracing::error!(%error, "integrations not reloaded; the last good set stays in force");
            }
        }
    }

    /// Keeps the set current until `shutdown`: the file is checked every `every`; the database
    /// is listened to. SIGHUP re-reads either.
    pub async fn watch(self, every: Duration, shutdown: Shutdown) {
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).expect("a SIGHUP handler installs");
        match &*self.store {
            Store::File(file) => {
                let mut seen: Option<SystemTime> = modified(file.path()).await;
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let now = modified(file.path()).await;
                            if now != seen {
                                seen = now;
                                self.reload().await;
                            }
                        }
                        _ = hangup.recv() => { self.reload().await; }
                        _ = shutdown.stopped() => return,
                    }
                }
            }
            Store::Postgres(database) => {
                let mut failed_before = false;
                loop {
                    match database.listen().await {
                        Ok(mut changes) => {
                            failed_before = false;
                            // What changed while nobody listened.
                            self.reload().await;
                            let mut recheck = tokio::time::interval(STORE_RECHECK);
                            recheck.tick().await;
                            loop {
                                tokio::select! {
                                    change = changes.next() => match change {
                                        Some(()) => { self.reload().await; }
                                        None => break,
                                    },
                                    _ = recheck.tick() => { self.reload().await; }
                                    _ = hangup.recv() => { self.reload().await; }
                                    _ = shutdown.stopped() => return,
                                }
                            }
                            tracing::warn!("lost the integrations database; the last good set stays in force");
                        }
                        // Once per outage, not once per attempt.
                        Err(error) if !failed_before => {
                            failed_before = true;
                            tracing::warn!(%error, "cannot listen to the integrations database; the last good set stays in force");
                        }
                        Err(_) => {}
                    }
                    self.metrics.store_up.set(0);
                    tokio::select! {
                        _ = tokio::time::sleep(RECONNECT_AFTER) => {}
                        _ = shutdown.stopped() => return,
                    }
                }
            }
        }
    }
}

/// When the file was last changed; looked up on the blocking pool (a stat waits on a slow disk
/// too), `None` when it cannot be.
async fn modified(path: &Path) -> Option<SystemTime> {
    tokio::fs::metadata(path).await.and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::store::tests::{by_test, form};

    #[tokio::test]
    async fn a_miss_re_reads_the_store_once_for_everything_that_came_before_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::File(dir.path().join("integrations.toml"));
        let console = Store::open(&location).await.unwrap();
        let env = HashMap::new();
        console.create(form("acme", 1), &env, &by_test()).await.unwrap();
        let postgres = crate::postgres::Postgres::new(crate::postgres::DEFAULT_TIMEOUT);
        let handle =
            IntegrationsHandle::open(&location, ReloadMetrics::new(&Registry::new()), &postgres).await.unwrap();

        let before = Instant::now();
        console.create(form("beta", 2), &env, &by_test()).await.unwrap();
        assert!(handle.current().get("beta").is_none(), "no watcher runs here");
        assert!(handle.current_after(before).await.get("beta").is_some(), "re-read for a miss");
        console.create(form("gamma", 3), &env, &by_test()).await.unwrap();
        let same = handle.current_after(before).await;
        assert!(same.get("gamma").is_none(), "a read that began after `before` already answers it");
        assert!(handle.current_after(Instant::now()).await.get("gamma").is_some());
    }

    fn series(registry: &Registry, name: &str) -> Vec<Vec<String>> {
        let families = registry.gather();
        let family = families.iter().find(|f| f.name() == name);
        family
            .map(|f| {
                f.get_metric().iter().map(|m| m.get_label().iter().map(|l| l.value().to_owned()).collect()).collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn each_version_in_force_and_each_refusal_is_a_series_that_goes_when_its_integration_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("integrations.toml");
        let location = Location::File(path.clone());
        let console = Store::open(&location).await.unwrap();
        let good = console.create(form("acme", 1), &HashMap::new(), &by_test()).await.unwrap();
        let registry = Registry::new();
        let postgres = crate::postgres::Postgres::new(crate::postgres::DEFAULT_TIMEOUT);
        let handle = IntegrationsHandle::open(&location, ReloadMetrics::new(&registry), &postgres).await.unwrap();
        assert_eq!(series(&registry, "bridge_integration_version"), [["acme".to_owned(), good.version.clone()]]);

        // Saved by a console that has the variable; this process has not.
        let env = HashMap::from([("BRIDGE_SECRET_ACME_TOKEN".to_owned(), "ct-from-the-console".to_owned())]);
        let mut needing = form("acme", 1);
        (needing.comagic_token, needing.comagic_token_env) = (None, Some("BRIDGE_SECRET_ACME_TOKEN".into()));
        let refused = console.update(needing, &good.version, &env, &by_test()).await.unwrap();
        console.create(form("beta", 2), &env, &by_test()).await.unwrap();
        handle.reload().await;
        assert!(handle.current().get("beta").is_some(), "the valid change applies");
        let versions = series(&registry, "bridge_integration_version");
        assert!(versions.contains(&vec!["acme".to_owned(), good.version.clone()]), "{versions:?}");
        let invalid = series(&registry, "bridge_integration_invalid");
        assert_eq!(invalid.len(), 1);
        assert_eq!(invalid[0][0], "acme");
        assert!(
            invalid[0].contains(&refused.version) && invalid[0].iter().any(|l| l.contains("is not set")),
            "{invalid:?}"
        );

        std::fs::write(&path, "").unwrap();
        handle.reload().await;
        assert!(series(&registry, "bridge_integration_version").is_empty());
        assert!(series(&registry, "bridge_integration_invalid").is_empty());
    }
}
