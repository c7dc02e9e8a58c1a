//! The integrations in force, kept current without a restart: from `integrations.toml` (re-read
//! when its modification time changes, or on SIGHUP) or from the PostgreSQL store (re-read on
//! each change it notifies). The set is taken one integration at a time: one that does not
//! validate here (a `*_env` variable this process lacks) stays at its last good version, or absent
//! if it never had one, while every other change applies; it is logged and shows in
//! `bridge_integration_invalid`, and the version each integration runs at in
//! `bridge_integration_version`, which the console reads to say whether a save reached every
//! process. So does one whose stored form does not read (a hand edit, or a field from a newer
//! release). A store that cannot be read, or a file that is not TOML, keeps the whole last good
//! set in force (at start-up: the process refuses to start).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::disk::Disk;
use crate::integrations::store::{version_of, Action, Location, Store, StoreError, Versioned};
use crate::integrations::Integrations;
use crate::lifecycle::Shutdown;

mod metrics;

pub use self::metrics::ReloadMetrics;

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
    /// One reload at a time: each publishes its set in place of the one before it.
    reloading: Arc<tokio::sync::Mutex<()>>,
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
        let env = environment();
        let mut set = Integrations::applying(store.read_for_services().await?, &env, &Integrations::default());
        if set.refused().next().is_some() {
            let last_good = last_good_in_history(&store, &set, &env).await;
            set = Integrations::applying(store.read_for_services().await?, &env, &last_good);
        }
        metrics.publish(&Integrations::default(), &set);
        Ok(IntegrationsHandle {
            current: Arc::new(RwLock::new(Arc::new(set))),
            store: Arc::new(store),
            metrics,
            read_on_demand: Arc::new(tokio::sync::Mutex::new(Instant::now())),
            reloading: Arc::default(),
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
    /// a store that cannot be read keeps the last good set in force. False when the store could
    /// not be read (the file watcher tries again), true when its content was judged.
    async fn reload(&self) -> bool {
        let _one_at_a_time = self.reloading.lock().await;
        match self.store.read_for_services().await {
            Ok(stored) => {
                let before = self.current();
                let set = Integrations::applying(stored, &environment(), &before);
                self.metrics.publish(&before, &set);
                *self.current.write().expect("never poisoned") = Arc::new(set);
                tracing::info!("integrations reloaded");
                true
            }
            Err(error) => {
                let unreachable = matches!(error, StoreError::Database(_) | StoreError::File(_));
                self.metrics.store_up.set(i64::from(!unreachable));
                self.metrics.failures.inc();
                tracing::error!(%error, "integrations not reloaded; the last good set stays in force");
                !unreachable
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
                let disk = Disk::default();
                let mut seen = stamp(&disk, file.path()).await;
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let now = stamp(&disk, file.path()).await;
                            // A read that failed is tried again on the next tick.
                            if now != seen && self.reload().await {
                                seen = now;
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

/// What tells a change of the file without reading it: a save renames a new file in (another
/// inode, even within one tick of a coarse clock), a hand edit changes its time or length.
/// Looked up on `disk` (a stat waits on a hung disk too: stuck ones take a bounded few threads);
/// `None` when it cannot be.
async fn stamp(disk: &Disk, path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let path = path.to_owned();
    let metadata = disk.run(move || std::fs::metadata(path)).await.ok()?.ok()?;
    Some((metadata.modified().ok()?, metadata.len(), metadata.ino()))
}

/// What a process starting runs for an integration it refuses at its stored version: the newest
/// form in its history that it takes, so that a restart does not turn "runs its last good
/// version" into "not served". A history that cannot be read gives nothing to keep.
async fn last_good_in_history(store: &Store, set: &Integrations, env: &HashMap<String, String>) -> Integrations {
    let mut good = Vec::new();
    for (id, _) in set.refused().filter(|(id, _)| set.get(id).is_none()) {
        let Ok(history) = store.history(id).await else { continue };
        // Since its last delete only: before it, the id may have been someone else's.
        let since_deleted = history.into_iter().take_while(|entry| entry.action != Action::Deleted);
        let usable = since_deleted.filter_map(|entry| entry.form).find(|form| form.clone().validate(0, env).is_ok());
        good.extend(usable.map(|form| Versioned { version: version_of(&form), form }));
    }
    Integrations::applying(good.into(), env, &Integrations::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::store::tests::{by_test, form};
    use crate::integrations::store::Edit;
    use prometheus::Registry;

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

    #[tokio::test]
    async fn an_entry_that_does_not_read_stays_at_its_last_good_version_and_the_others_apply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("integrations.toml");
        let location = Location::File(path.clone());
        let console = Store::open(&location).await.unwrap();
        for (id, campaign) in [("acme", 1), ("beta", 2)] {
            console.create(form(id, campaign), &HashMap::new(), &by_test()).await.unwrap();
        }
        let registry = Registry::new();
        let postgres = crate::postgres::Postgres::new(crate::postgres::DEFAULT_TIMEOUT);
        let handle = IntegrationsHandle::open(&location, ReloadMetrics::new(&registry), &postgres).await.unwrap();
        let acme_version = handle.current().version("acme").unwrap().to_owned();

        // By hand (or by a newer release): acme gains a field this release does not know, beta a
        // new campaign.
        let mut edited: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for entry in edited["integration"].as_array_mut().unwrap() {
            let entry = entry.as_table_mut().unwrap();
            match entry["id"].as_str() {
                Some("acme") => drop(entry.insert("added_by_a_newer_release".into(), true.into())),
                _ => drop(entry["default"].as_table_mut().unwrap().insert("campaign_id".into(), 20.into())),
            }
        }
        std::fs::write(&path, toml::to_string(&edited).unwrap()).unwrap();
        handle.reload().await;

        let set = handle.current();
        let beta = set.get("beta").unwrap();
        assert_eq!(beta.default, crate::integrations::Target::Campaign { campaign_id: 20 }, "beta's change applies");
        assert_eq!(set.version("acme"), Some(acme_version.as_str()), "acme stays at its last good version");
        let invalid = series(&registry, "bridge_integration_invalid");
        assert_eq!(invalid.len(), 1, "{invalid:?}");
        assert_eq!(invalid[0][0], "acme");
        assert!(invalid[0].iter().any(|l| l.contains("added_by_a_newer_release")), "{invalid:?}");
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

        // Restarted: the last good version comes from the history.
        let restarted =
            IntegrationsHandle::open(&location, ReloadMetrics::new(&Registry::new()), &postgres).await.unwrap();
        assert_eq!(restarted.current().version("acme"), Some(good.version.as_str()), "a restart keeps it served");
        assert_eq!(restarted.current().refused().count(), 1);

        // Deleted and created again (for someone else) as this process cannot take it: a restart
        // runs nothing of the owner before.
        let refused = console.get("acme").await.unwrap();
        console.delete("acme", &refused.version, &Edit::new("test", Action::Deleted)).await.unwrap();
        console.create(refused.form, &env, &by_test()).await.unwrap();
        let restarted =
            IntegrationsHandle::open(&location, ReloadMetrics::new(&Registry::new()), &postgres).await.unwrap();
        assert_eq!(restarted.current().version("acme"), None, "its history before the delete is not its own");

        std::fs::write(&path, "").unwrap();
        handle.reload().await;
        assert!(series(&registry, "bridge_integration_version").is_empty());
        assert!(series(&registry, "bridge_integration_invalid").is_empty());
    }
}
