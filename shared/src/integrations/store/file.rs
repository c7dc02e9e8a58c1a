//! The file store: `integrations.toml`, rewritten whole on each save (into a temporary file,
//! fsynced, renamed over the old one), so a process reloading it never reads half a file. A save
//! drops the file's comments: the console's users edit forms, not the file. Reads and writes run on
//! the blocking pool: an fsync on a slow disk must not stall the async workers serving requests.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::sync::Mutex;

use super::{StoreError, Versioned};
use crate::integrations::{IntegrationForm, Integrations, IntegrationsFile};
use crate::settings::ConfigError;

const HEADER: &str = "# The tenants' integrations (docs/integrations.md). Written by `deliver console` on each save;\n\
                      # edits by hand are read too, but comments do not survive the next save.\n\n";

pub struct FileStore {
    path: PathBuf,
    /// Saves one at a time: each reads, checks the version and writes.
    saving: Mutex<()>,
}

impl FileStore {
    pub fn new(path: PathBuf) -> Self {
        FileStore { path, saving: Mutex::new(()) }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn read_now(path: &Path) -> Result<IntegrationsFile, StoreError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(IntegrationsFile::default()),
            Err(e) => return Err(StoreError::File(format!("cannot read {}: {e}", path.display()))),
        };
        let value: toml::Value = toml::from_str(&text).map_err(|e| {
            StoreError::Invalid(ConfigError::Syntax {
                path: path.display().to_string(),
                message: crate::settings::syntax_message(&e, &text),
            })
        })?;
        Ok(crate::settings::deserialize_naming_key(value)?)
    }

    fn write_now(path: &Path, file: &IntegrationsFile, env: &HashMap<String, String>) -> Result<(), StoreError> {
        // What every process would refuse to load is never written.
        Integrations::from_forms(file.integration.clone(), env)?;
        let text = toml::to_string(file).map_err(|e| StoreError::File(format!("cannot format: {e}")))?;
        let failed = |e: std::io::Error| StoreError::File(format!("cannot write {}: {e}", path.display()));
        let temporary = path.with_extension("toml.saving");
        {
            use std::os::unix::fs::OpenOptionsExt;
            // It holds tokens: readable by its owner only.
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)
                .map_err(failed)?;
            out.write_all(HEADER.as_bytes()).map_err(failed)?;
            out.write_all(text.as_bytes()).map_err(failed)?;
            out.sync_all().map_err(failed)?;
        }
        std::fs::rename(&temporary, path).map_err(failed)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(failed)?;
        }
        Ok(())
    }

    async fn read(&self) -> Result<IntegrationsFile, StoreError> {
        let path = self.path.clone();
        off_the_workers(move || Self::read_now(&path)).await
    }

    async fn write(&self, file: IntegrationsFile, env: &HashMap<String, String>) -> Result<(), StoreError> {
        let (path, env) = (self.path.clone(), env.clone());
        off_the_workers(move || Self::write_now(&path, &file, &env)).await
    }

    pub async fn list(&self) -> Result<Vec<Versioned>, StoreError> {
        let mut all: Vec<Versioned> = self.read().await?.integration.into_iter().map(Versioned::new).collect();
        all.sort_by(|a, b| a.form.id.cmp(&b.form.id));
        Ok(all)
    }

    pub async fn create(&self, form: IntegrationForm, env: &HashMap<String, String>) -> Result<Versioned, StoreError> {
        let _saving = self.saving.lock().await;
        let mut file = self.read().await?;
        if file.integration.iter().any(|f| f.id == form.id) {
            return Err(StoreError::Exists(form.id));
        }
        file.integration.push(form.clone());
        self.write(file, env).await?;
        Ok(Versioned::new(form))
    }

    pub async fn update(
        &self,
        form: IntegrationForm,
        version: &str,
        env: &HashMap<String, String>,
    ) -> Result<Versioned, StoreError> {
        let _saving = self.saving.lock().await;
        let mut file = self.read().await?;
        let Some(slot) = file.integration.iter_mut().find(|f| f.id == form.id) else {
            return Err(StoreError::NotFound(form.id));
        };
        let current = Versioned::new(slot.clone()).version;
        if current != version {
            return Err(StoreError::Stale { id: form.id, current });
        }
        *slot = form.clone();
        self.write(file, env).await?;
        Ok(Versioned::new(form))
    }
}

/// Runs `work` on the blocking pool; a panic in it is an error of the store, not of the caller.
async fn off_the_workers<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done,
        Err(failed) => Err(StoreError::File(format!("the file work did not finish: {failed}"))),
    }
}
