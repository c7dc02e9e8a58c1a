//! The integrations in force, kept current without a restart: from `integrations.toml` (re-read
//! when its modification time changes, or on SIGHUP) or from the PostgreSQL store (re-read on
//! each change it notifies). A set that does not validate, or a store that cannot be read, keeps
//! the last good set in force; the failure is logged and shows in the metrics.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use prometheus::{IntCounter, IntGauge, Registry};

use crate::integrations::store::{Location, Store, StoreError};
use crate::integrations::Integrations;
use crate::lifecycle::Shutdown;

#[derive(Debug, Clone)]
pub struct ReloadMetrics {
    pub(crate) failures: IntCounter,
    pub(crate) integrations: IntGauge,
    pub(crate) store_up: IntGauge,
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
        for metric in [&integrations, &store_up] {
            registry.register(Box::new(metric.clone())).expect("registered once");
        }
        registry.register(Box::new(failures.clone())).expect("registered once");
        ReloadMetrics { failures, integrations, store_up }
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
        let set = store.integrations(&environment()).await?;
        metrics.integrations.set(set.len() as i64);
        metrics.store_up.set(1);
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

    /// Re-reads the store; on error the last good set stays in force.
    async fn reload(&self) {
        match self.store.integrations(&environment()).await {
            Ok(set) => {
                self.metrics.store_up.set(1);
                self.metrics.integrations.set(set.len() as i64);
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
}
