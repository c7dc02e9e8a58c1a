//! `integrations.toml`, re-read on change (polled) or SIGHUP without a restart. A broken edit keeps
//! the last good set; the failure is logged and counted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use prometheus::{IntCounter, IntGauge, Registry};

use crate::integrations::Integrations;
use crate::lifecycle::Shutdown;
use crate::settings::ConfigError;

#[derive(Debug, Clone)]
pub struct ReloadMetrics {
    pub(crate) failures: IntCounter,
    pub(crate) integrations: IntGauge,
}

impl ReloadMetrics {
    pub fn new(registry: &Registry) -> Self {
        let failures = IntCounter::new(
            "bridge_config_reload_failures_total",
            "Edits of integrations.toml refused (the last good set stays)",
        )
        .expect("valid metric");
        let integrations =
            IntGauge::new("bridge_config_integrations", "Integrations in the set in force").expect("valid metric");
        registry.register(Box::new(failures.clone())).expect("registered once");
        registry.register(Box::new(integrations.clone())).expect("registered once");
        ReloadMetrics { failures, integrations }
    }
}

/// The integrations in force; cheap to clone and to read on every request.
#[derive(Debug, Clone)]
pub struct IntegrationsHandle {
    current: Arc<RwLock<Arc<Integrations>>>,
    path: PathBuf,
    metrics: ReloadMetrics,
}

impl IntegrationsHandle {
    /// Loads the file; at start-up a broken file is an error (the process refuses to start).
    pub fn load(path: &Path, metrics: ReloadMetrics) -> Result<Self, ConfigError> {
        let set = Integrations::load(path)?;
        metrics.integrations.set(set.len() as i64);
        Ok(IntegrationsHandle { current: Arc::new(RwLock::new(Arc::new(set))), path: path.to_owned(), metrics })
    }

    pub fn current(&self) -> Arc<Integrations> {
        self.current.read().expect("never poisoned: writers do not panic").clone()
    }

    /// Re-reads the file; on error the last good set stays in force.
    pub fn reload(&self) -> Result<(), ConfigError> {
        match Integrations::load(&self.path) {
            Ok(set) => {
                self.metrics.integrations.set(set.len() as i64);
                *self.current.write().expect("never poisoned") = Arc::new(set);
                tracing::info!(path = %self.path.display(), "integrations reloaded");
                Ok(())
            }
            Err(error) => {
                self.metrics.failures.inc();
                tracing::error!(path = %self.path.display(), %error, "integrations.toml refused; the last good set stays in force");
                Err(error)
            }
        }
    }

    /// Reloads when the file's modification time changes (checked every `every`) or on SIGHUP,
    /// until `shutdown` turns true.
    pub async fn watch(self, every: Duration, shutdown: Shutdown) {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen: Option<SystemTime> = modified(&self.path);
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).expect("a SIGHUP handler installs");
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = modified(&self.path);
                    if now != seen {
                        seen = now;
                        let _ = self.reload();
                    }
                }
                _ = hangup.recv() => { let _ = self.reload(); }
                _ = shutdown.stopped() => return,
            }
        }
    }
}
