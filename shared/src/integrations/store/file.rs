//! The file store: `integrations.toml`, rewritten whole on each save (into a temporary file,
//! fsynced, renamed over the old one), so a process reloading it never reads half a file. A save
//! drops the file's comments: the console's users edit forms, not the file. Reads and writes run on
//! the blocking pool, with a deadline ([`crate::disk`]); the write lock is held until a write's disk
//! work has ended, even one its caller stopped waiting for.
//!
//! The history is `integrations.history.jsonl` beside it: an entry a line (the integration's id
//! beside it), appended and fsynced before the form is written, with the same permissions. A crash
//! between the two writes keeps an entry of a save that never landed (its `to_version` is then no
//! version the integration had); it never loses the entry of a save that did. Once an integration
//! has twice [`KEPT`] entries, the file is rewritten with its newest [`KEPT`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

use serde::{Deserialize, Serialize};

use super::history::{Edit, Entry, KEPT};
use super::{StoreError, Stored, Unreadable, Versioned};
use crate::disk;
use crate::integrations::{IntegrationForm, IntegrationsFile};
use crate::settings::{deserialize_naming_key, ConfigError};

const HEADER: &str = "# The tenants' integrations (docs/integrations.md). Written by `deliver console` on each save;\n\
                      # edits by hand are read too, but comments do not survive the next save.\n\n";

/// The history file as read: each line with what it reads as, and whether the file ends in a line
/// break (the torn end of an append does not).
struct HistoryFile {
    lines: Vec<(Vec<u8>, Option<Line>)>,
    whole: bool,
}

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
    writer: Arc<Mutex<()>>,
    disk: disk::Disk,
}

impl FileStore {
    pub fn new(path: PathBuf) -> Self {
        FileStore { path, writer: Arc::new(Mutex::new(())), disk: disk::Disk::default() }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The file's TOML; `None` when there is no file.
    fn parse_now(path: &Path) -> Result<Option<toml::Table>, StoreError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::File(format!("cannot read {}: {e}", path.display()))),
        };
        toml::from_str(&text).map(Some).map_err(|e| {
            StoreError::Invalid(ConfigError::Syntax {
                path: path.display().to_string(),
                message: crate::settings::syntax_message(&e, &text),
            })
        })
    }

    fn read_now(path: &Path) -> Result<IntegrationsFile, StoreError> {
        match Self::parse_now(path)? {
            Some(table) => Ok(deserialize_naming_key(toml::Value::Table(table))?),
            None => Ok(IntegrationsFile::default()),
        }
    }

    /// The file as the services read it: each `[[integration]]` on its own, so one that does not
    /// read is [`Unreadable`] and the rest apply; anything else wrong with the file is an error.
    fn read_for_services_now(path: &Path) -> Result<Stored, StoreError> {
        let Some(mut table) = Self::parse_now(path)? else { return Ok(Stored::default()) };
        let entries = match table.remove("integration") {
            None => Vec::new(),
            Some(toml::Value::Array(entries)) => entries,
            Some(_) => {
                return Err(ConfigError::invalid("integration", "must be an array of tables ([[integration]])").into())
            }
        };
        let _only_integrations: IntegrationsFile = deserialize_naming_key(toml::Value::Table(table))?;
        let mut stored = Stored::default();
        for (index, entry) in entries.into_iter().enumerate() {
            match deserialize_naming_key::<_, IntegrationForm>(entry.clone()) {
                Ok(form) => stored.readable.push(Versioned::new(form)),
                Err(error) => {
                    let raw = serde_json::to_value(&entry).unwrap_or_default();
                    let version = super::digest(raw.to_string().as_bytes());
                    stored.unreadable.push(Unreadable::new(format!("integration[{index}]"), version, &raw, error));
                }
            }
        }
        stored.readable.sort_by(|a, b| a.form.id.cmp(&b.form.id));
        Ok(stored)
    }

    fn write_now(path: &Path, file: &IntegrationsFile) -> Result<(), StoreError> {
        let text = toml::to_string(file).map_err(|e| StoreError::File(format!("cannot format: {e}")))?;
        disk::replace(path, "toml.saving", &[HEADER.as_bytes(), text.as_bytes()]).map_err(failed(path))
    }

    fn history_path(path: &Path) -> PathBuf {
        path.with_extension("history.jsonl")
    }

    /// The history file's lines, oldest first, each with what it reads as: a line that does not
    /// read (a hand edit, bytes that are not UTF-8, the torn end of an append a crash cut short)
    /// reads as `None`, is said, and is kept by a rewrite, so one bad line hides and drops nothing
    /// else.
    fn read_history_now(path: &Path) -> Result<HistoryFile, StoreError> {
        let path = Self::history_path(path);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(HistoryFile { lines: Vec::new(), whole: true })
            }
            Err(e) => return Err(StoreError::File(format!("cannot read {}: {e}", path.display()))),
        };
        // Lines as bytes: a rewrite keeps an unreadable one byte for byte.
        let read = |(n, line): (usize, &[u8])| {
            let parsed = serde_json::from_slice(line)
                .map_err(|e| {
                    tracing::warn!(file = %path.display(), line = n + 1, error = %e, "a history line is unreadable");
                })
                .ok();
            (line.to_vec(), parsed)
        };
        let blank = |line: &[u8]| line.iter().all(u8::is_ascii_whitespace);
        let lines = bytes.split(|b| *b == b'\n').enumerate().filter(|(_, l)| !blank(l)).map(read).collect();
        Ok(HistoryFile { lines, whole: bytes.last().is_none_or(|b| *b == b'\n') })
    }

    fn append_history_now(path: &Path, id: &str, entry: Entry) -> Result<(), StoreError> {
        let history = Self::history_path(path);
        let HistoryFile { lines, whole } = Self::read_history_now(path)?;
        let ours = |line: &Option<Line>| line.as_ref().is_some_and(|l| l.id == id);
        let line = serde_json::to_string(&Line { id: id.to_owned(), entry }).expect("a history line serialises") + "\n";
        let theirs = lines.iter().filter(|(_, parsed)| ours(parsed)).count();
        if theirs + 1 < 2 * KEPT {
            use std::os::unix::fs::OpenOptionsExt;
            let mut out = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&history)
                .map_err(failed(&history))?;
            // After a torn append, the new line starts on a line of its own.
            let line = if whole { line } else { format!("\n{line}") };
            out.write_all(line.as_bytes()).map_err(failed(&history))?;
            return out.sync_all().map_err(failed(&history));
        }
        let mut skip = theirs + 1 - KEPT;
        let mut kept = Vec::new();
        for (raw, parsed) in &lines {
            let drop = ours(parsed) && skip > 0;
            skip -= usize::from(drop);
            if !drop {
                kept.extend_from_slice(raw);
                kept.push(b'\n');
            }
        }
        kept.extend_from_slice(line.as_bytes());
        disk::replace(&history, "jsonl.saving", &[&kept]).map_err(failed(&history))
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
        self.off_the_workers(move || Self::read_now(&path)).await
    }

    pub async fn read_for_services(&self) -> Result<Stored, StoreError> {
        let path = self.path.clone();
        self.off_the_workers(move || Self::read_for_services_now(&path)).await
    }

    /// The right to write, held until the write's disk work has ended (not only until its caller
    /// stopped waiting), so a write that outlives its deadline never runs beside the next one.
    async fn write_turn(&self) -> Result<OwnedMutexGuard<()>, StoreError> {
        let waited = tokio::time::timeout(disk::DISK_WORK_FOR, self.writer.clone().lock_owned()).await;
        waited.map_err(|_| StoreError::File(disk::DiskError::Silent.to_string()))
    }

    async fn save(
        &self,
        saving: OwnedMutexGuard<()>,
        file: IntegrationsFile,
        id: &str,
        entry: Entry,
    ) -> Result<(), StoreError> {
        let (path, id) = (self.path.clone(), id.to_owned());
        self.off_the_workers(move || {
            let _saving = saving;
            Self::save_now(&path, &file, &id, entry)
        })
        .await
    }

    /// Runs `work` on this store's [`disk::Disk`].
    async fn off_the_workers<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.disk.run(work).await.map_err(|e| StoreError::File(e.to_string()))?
    }

    pub async fn list(&self) -> Result<Vec<Versioned>, StoreError> {
        let mut all: Vec<Versioned> = self.read().await?.integration.into_iter().map(Versioned::new).collect();
        all.sort_by(|a, b| a.form.id.cmp(&b.form.id));
        Ok(all)
    }

    pub async fn create(&self, form: IntegrationForm, edit: &Edit) -> Result<Versioned, StoreError> {
        let saving = self.write_turn().await?;
        let mut file = self.read().await?;
        if file.integration.iter().any(|f| f.id == form.id) {
            return Err(StoreError::Exists(form.id));
        }
        file.integration.push(form.clone());
        self.save(saving, file, &form.id, Entry::of_change(edit, None, Some(&form))).await?;
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
        let saving = self.write_turn().await?;
        let mut file = self.read().await?;
        let index = Self::at(&file, &form.id, version)?;
        let before = std::mem::replace(&mut file.integration[index], form.clone());
        self.save(saving, file, &form.id, Entry::of_change(edit, Some(&before), Some(&form))).await?;
        Ok(Versioned::new(form))
    }

    pub async fn delete(&self, id: &str, version: &str, edit: &Edit) -> Result<Versioned, StoreError> {
        let saving = self.write_turn().await?;
        let mut file = self.read().await?;
        let index = Self::at(&file, id, version)?;
        let before = file.integration.remove(index);
        self.save(saving, file, id, Entry::of_change(edit, Some(&before), None)).await?;
        Ok(Versioned::new(before))
    }

    /// Records an action on the integration that leaves its form as it is.
    pub async fn record(&self, id: &str, edit: &Edit, detail: &str) -> Result<(), StoreError> {
        let saving = self.write_turn().await?;
        let file = self.read().await?;
        let form = file.integration.iter().find(|f| f.id == id).ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let entry = Entry::of_action(edit, &Versioned::new(form.clone()).version, detail);
        let (path, id) = (self.path.clone(), id.to_owned());
        self.off_the_workers(move || {
            let _saving = saving;
            Self::append_history_now(&path, &id, entry)
        })
        .await
    }

    /// The integration's history, newest first.
    pub async fn history(&self, id: &str) -> Result<Vec<Entry>, StoreError> {
        let path = self.path.clone();
        let read = self.off_the_workers(move || Self::read_history_now(&path)).await?;
        let entries = read.lines.into_iter().rev().filter_map(|(_, line)| line.filter(|l| l.id == id));
        Ok(entries.take(KEPT).map(|l| l.entry).collect())
    }
}

fn failed(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::File(format!("cannot write {}: {e}", path.display()))
}
