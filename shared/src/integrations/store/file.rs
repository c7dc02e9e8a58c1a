//! The file store: `integrations.toml`, rewritten whole on each save (into a temporary file,
//! fsynced, renamed over the old one), so a process reloading it never reads half a file. A save
//! drops the file's comments: the console's users edit forms, not the file. Reads and writes run on
//! the blocking pool: an fsync on a slow disk must not stall the async workers serving requests.
//!
//! The history is `integrations.history.jsonl` beside it: an entry a line (the integration's id
//! beside it), appended and fsynced before the form is written, with the same permissions. A crash
//! between the two writes keeps an entry of a save that never landed (its `to_version` is then no
//! version the integration had); it never loses the entry of a save that did. Once an integration
//! has twice [`KEPT`] entries, the file is rewritten with its newest [`KEPT`].

use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::history::{Edit, Entry, KEPT};
use super::{StoreError, Versioned};
use crate::integrations::{IntegrationForm, IntegrationsFile};
use crate::settings::ConfigError;

const HEADER: &str = "# The tenants' integrations (docs/integrations.md). Written by `deliver console` on each save;\n\
                      # edits by hand are read too, but comments do not survive the next save.\n\n";

/// A line of the history file.
#[derive(Serialize, Deserialize)]
struct Line {
    id: String,
    #[serde(flatten)]
    entry: Entry,
}

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

    fn write_now(path: &Path, file: &IntegrationsFile) -> Result<(), StoreError> {
        let text = toml::to_string(file).map_err(|e| StoreError::File(format!("cannot format: {e}")))?;
        replace(path, "toml.saving", &[HEADER.as_bytes(), text.as_bytes()]).map_err(failed(path))
    }

    fn history_path(path: &Path) -> PathBuf {
        path.with_extension("history.jsonl")
    }

    /// Every line of the history file, oldest first; a line that does not read is skipped (and
    /// said), so one hand edit does not hide the rest.
    fn read_history_now(path: &Path) -> Result<Vec<Line>, StoreError> {
        let path = Self::history_path(path);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::File(format!("cannot read {}: {e}", path.display()))),
        };
        let read = |(n, line): (usize, &str)| match serde_json::from_str(line) {
            Ok(line) => Some(line),
            Err(e) => {
                tracing::warn!(file = %path.display(), line = n + 1, error = %e, "a history line is unreadable");
                None
            }
        };
        Ok(text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).filter_map(read).collect())
    }

    fn append_history_now(path: &Path, id: &str, entry: Entry) -> Result<(), StoreError> {
        let history = Self::history_path(path);
        let lines = Self::read_history_now(path)?;
        let line = Line { id: id.to_owned(), entry };
        let text = |line: &Line| serde_json::to_string(line).expect("a history line serialises") + "\n";
        let theirs = lines.iter().filter(|l| l.id == id).count();
        if theirs + 1 < 2 * KEPT {
            use std::os::unix::fs::OpenOptionsExt;
            let mut out = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&history)
                .map_err(failed(&history))?;
            out.write_all(text(&line).as_bytes()).map_err(failed(&history))?;
            return out.sync_all().map_err(failed(&history));
        }
        let mut skip = theirs + 1 - KEPT;
        let kept: String = lines
            .iter()
            .chain(std::iter::once(&line))
            .filter(|l| {
                let drop = l.id == id && skip > 0;
                skip -= usize::from(drop);
                !drop
            })
            .map(text)
            .collect();
        replace(&history, "jsonl.saving", &[kept.as_bytes()]).map_err(failed(&history))
    }

    /// Records the entry, then writes the set. Only the form saved was validated (by
    /// [`super::Store`]): whether another one loads is each process's to judge, with its own
    /// environment (one it cannot load stays at its last good version there), so an integration
    /// naming a variable the console lacks does not refuse every later save.
    fn save_now(path: &Path, file: &IntegrationsFile, id: &str, entry: Entry) -> Result<(), StoreError> {
        Self::append_history_now(path, id, entry)?;
        Self::write_now(path, file)
    }

    async fn read(&self) -> Result<IntegrationsFile, StoreError> {
        let path = self.path.clone();
        off_the_workers(move || Self::read_now(&path)).await
    }

    async fn save(&self, file: IntegrationsFile, id: &str, entry: Entry) -> Result<(), StoreError> {
        let (path, id) = (self.path.clone(), id.to_owned());
        off_the_workers(move || Self::save_now(&path, &file, &id, entry)).await
    }

    pub async fn list(&self) -> Result<Vec<Versioned>, StoreError> {
        let mut all: Vec<Versioned> = self.read().await?.integration.into_iter().map(Versioned::new).collect();
        all.sort_by(|a, b| a.form.id.cmp(&b.form.id));
        Ok(all)
    }

    pub async fn create(&self, form: IntegrationForm, edit: &Edit) -> Result<Versioned, StoreError> {
        let _saving = self.saving.lock().await;
        let mut file = self.read().await?;
        if file.integration.iter().any(|f| f.id == form.id) {
            return Err(StoreError::Exists(form.id));
        }
        file.integration.push(form.clone());
        self.save(file, &form.id, Entry::of_change(edit, None, Some(&form))).await?;
        Ok(Versioned::new(form))
    }

    /// The position of integration `id` in `file`, if it is at `version`.
    fn at(file: &IntegrationsFile, id: &str, version: &str) -> Result<usize, StoreError> {
        let index =
            file.integration.iter().position(|f| f.id == id).ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let current = Versioned::new(file.integration[index].clone()).version;
        if current == version {
            Ok(index)
        } else {
            Err(StoreError::Stale { id: id.to_owned(), current })
        }
    }

    pub async fn update(&self, form: IntegrationForm, version: &str, edit: &Edit) -> Result<Versioned, StoreError> {
        let _saving = self.saving.lock().await;
        let mut file = self.read().await?;
        let index = Self::at(&file, &form.id, version)?;
        let before = std::mem::replace(&mut file.integration[index], form.clone());
        self.save(file, &form.id, Entry::of_change(edit, Some(&before), Some(&form))).await?;
        Ok(Versioned::new(form))
    }

    pub async fn delete(&self, id: &str, version: &str, edit: &Edit) -> Result<Versioned, StoreError> {
        let _saving = self.saving.lock().await;
        let mut file = self.read().await?;
        let index = Self::at(&file, id, version)?;
        let before = file.integration.remove(index);
        self.save(file, id, Entry::of_change(edit, Some(&before), None)).await?;
        Ok(Versioned::new(before))
    }

    /// Records an action on the integration that leaves its form as it is.
    pub async fn record(&self, id: &str, edit: &Edit, detail: &str) -> Result<(), StoreError> {
        let _saving = self.saving.lock().await;
        let file = self.read().await?;
        let form = file.integration.iter().find(|f| f.id == id).ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let entry = Entry::of_action(edit, &Versioned::new(form.clone()).version, detail);
        let (path, id) = (self.path.clone(), id.to_owned());
        off_the_workers(move || Self::append_history_now(&path, &id, entry)).await
    }

    /// The integration's history, newest first.
    pub async fn history(&self, id: &str) -> Result<Vec<Entry>, StoreError> {
        let path = self.path.clone();
        let lines = off_the_workers(move || Self::read_history_now(&path)).await?;
        Ok(lines.into_iter().rev().filter(|l| l.id == id).take(KEPT).map(|l| l.entry).collect())
    }
}

fn failed(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::File(format!("cannot write {}: {e}", path.display()))
}

/// Replaces `path` with `parts`: written into a temporary file (readable by its owner only: it
/// holds tokens), fsynced, renamed over it, the directory fsynced.
fn replace(path: &Path, temporary_extension: &str, parts: &[&[u8]]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension(temporary_extension);
    {
        let mut out =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
        for part in parts {
            out.write_all(part)?;
        }
        out.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all())?;
    }
    Ok(())
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
