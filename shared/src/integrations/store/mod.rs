//! Where the integrations are kept, behind one interface: `integrations.toml` (one machine; the
//! default) or PostgreSQL (several machines: `integrations_store = "postgres://…"`). Every save
//! names the version it was based on, so two admins editing one integration cannot silently
//! overwrite each other: the second save is refused as stale.

mod file;
pub mod history;
mod postgres;

use std::collections::HashMap;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{IntegrationForm, Integrations};
use crate::postgres::{Postgres, Role};
use crate::secret::Secret;
use crate::settings::{ConfigError, Settings};

pub use self::file::FileStore;
pub use self::history::{Action, Edit, Entry};
pub use self::postgres::{Changes, PgStore};

/// A form as stored, with the version a save must name to replace it.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub form: IntegrationForm,
    pub version: String,
}

impl Versioned {
    fn new(form: IntegrationForm) -> Self {
        let version = version_of(&form);
        Versioned { form, version }
    }
}

/// The version of a form: a digest of its content, so the file store needs no counter and a hand
/// edit of the file is seen as a change too.
pub fn version_of(form: &IntegrationForm) -> String {
    digest(&serde_json::to_vec(form).expect("a form serialises"))
}

/// 16 hex digits of the SHA-256 of `bytes`.
fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A stored integration this process cannot read: a hand edit of the file, or a form a newer
/// release wrote with a field this one does not know. The services refuse it alone, at its last
/// good version, and take the rest ([`Store::read_for_services`]). The console's [`Store::list`]
/// of the file names it and reads nothing (a save rewrites the whole file: none may drop it
/// unseen); of PostgreSQL, where each row is saved alone, leaves it out and logs it.
#[derive(Debug)]
pub struct Unreadable {
    /// Its `id` where that reads as one, else its place (`integration[3]`).
    pub id: String,
    /// The store's version of it (the file store's: a digest of the entry's text).
    pub version: String,
    pub error: ConfigError,
    /// Its webhook token (or that token's variable), where those read: its webhooks then wait for
    /// the fix instead of being told the URL does not exist.
    pub webhook_token: Option<Secret>,
    pub webhook_token_env: Option<String>,
}

impl Unreadable {
    /// From a raw entry (a TOML table or a JSON object, as [`serde_json::Value`]).
    fn new(place: String, version: String, raw: &serde_json::Value, error: ConfigError) -> Self {
        let text = |key: &str| raw.get(key).and_then(serde_json::Value::as_str);
        let id = text("id").filter(|id| super::form::id_ok(id)).map_or(place, str::to_owned);
        let webhook_token = text("webhook_token").map(|t| Secret::new(t.to_owned()));
        let webhook_token_env = text("webhook_token_env").map(str::to_owned);
        Unreadable { id, version, error, webhook_token, webhook_token_env }
    }
}

/// The store as the services read it: every form that reads, and every one that does not.
#[derive(Debug, Default)]
pub struct Stored {
    pub readable: Vec<Versioned>,
    pub unreadable: Vec<Unreadable>,
}

impl From<Vec<Versioned>> for Stored {
    fn from(readable: Vec<Versioned>) -> Self {
        Stored { readable, unreadable: Vec::new() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no integration `{0}`")]
    NotFound(String),
    #[error("an integration `{0}` exists already")]
    Exists(String),
    #[error("integration `{id}` was changed by someone else since it was read (it is now version {current})")]
    Stale { id: String, current: String },
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("integrations file: {0}")]
    File(String),
    /// The message says what failed, never the database URL (it may hold a password).
    #[error("integrations database: {0}")]
    Database(#[from] crate::postgres::DbError),
}

pub enum Store {
    File(FileStore),
    Postgres(PgStore),
}

/// Where `settings` keep the integrations; says which without a password.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    Postgres { url: String, scope: String },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Postgres { scope, .. } => write!(f, "the integrations database (scope {scope})"),
        }
    }
}

impl Location {
    /// Reads the set once, for a command (`ingest setup`, `deliver check`).
    pub async fn read(&self) -> Result<Integrations, StoreError> {
        let env = std::env::vars().collect();
        Store::open(self).await?.integrations(&env).await
    }

    pub fn of(settings: &Settings) -> Self {
        if settings.integrations_store.is_empty() {
            Location::File(settings.integrations.clone())
        } else {
            Location::Postgres {
                url: settings.integrations_store.clone(),
                scope: settings.amqp.topology_prefix.clone(),
            }
        }
    }
}

impl Store {
    /// Opens the store (for PostgreSQL: connects and applies its migration), with the default
    /// deadline and no metric: for commands and tests.
    pub async fn open(location: &Location) -> Result<Self, StoreError> {
        Self::open_with(location, &Postgres::new(crate::postgres::DEFAULT_TIMEOUT)).await
    }

    /// Opens the store; a PostgreSQL one reports to `postgres` as [`Role::Integrations`].
    pub async fn open_with(location: &Location, postgres: &Postgres) -> Result<Self, StoreError> {
        Ok(match location {
            Location::File(path) => Store::File(FileStore::new(path.clone())),
            Location::Postgres { url, scope } => {
                Store::Postgres(PgStore::connect(postgres.database(url, Role::Integrations)?, scope).await?)
            }
        })
    }

    /// Every integration, in id order.
    pub async fn list(&self) -> Result<Vec<Versioned>, StoreError> {
        match self {
            Store::File(s) => s.list().await,
            Store::Postgres(s) => s.list().await,
        }
    }

    /// Every integration, for a process that runs them: one that does not read is
    /// [`Unreadable`], not an error for all (a file that is not TOML, or a store that does not
    /// answer, still is).
    pub async fn read_for_services(&self) -> Result<Stored, StoreError> {
        match self {
            Store::File(s) => s.read_for_services().await,
            Store::Postgres(s) => s.read_for_services().await,
        }
    }

    pub async fn get(&self, id: &str) -> Result<Versioned, StoreError> {
        match self {
            Store::File(s) => {
                let all = s.list().await?;
                all.into_iter().find(|v| v.form.id == id).ok_or_else(|| StoreError::NotFound(id.to_owned()))
            }
            Store::Postgres(s) => s.get(id).await,
        }
    }

    /// Adds an integration whose id is new, recording `edit`. The form is validated (with `env`
    /// for secrets named by environment variable) before anything is written.
    pub async fn create(
        &self,
        form: IntegrationForm,
        env: &HashMap<String, String>,
        edit: &Edit,
    ) -> Result<Versioned, StoreError> {
        validate(&form, env)?;
        match self {
            Store::File(s) => s.create(form, edit).await,
            Store::Postgres(s) => s.create(form, edit).await,
        }
    }

    /// Replaces an integration, if it is still at `version`, recording `edit`.
    pub async fn update(
        &self,
        form: IntegrationForm,
        version: &str,
        env: &HashMap<String, String>,
        edit: &Edit,
    ) -> Result<Versioned, StoreError> {
        validate(&form, env)?;
        match self {
            Store::File(s) => s.update(form, version, edit).await,
            Store::Postgres(s) => s.update(form, version, edit).await,
        }
    }

    /// Deletes an integration, if it is still at `version`; its history keeps the form (for a
    /// restore). Returns what was deleted.
    pub async fn delete(&self, id: &str, version: &str, edit: &Edit) -> Result<Versioned, StoreError> {
        match self {
            Store::File(s) => s.delete(id, version, edit).await,
            Store::Postgres(s) => s.delete(id, version, edit).await,
        }
    }

    /// Records an action on an integration that leaves its form as it is (its dead letters').
    pub async fn record(&self, id: &str, edit: &Edit, detail: &str) -> Result<(), StoreError> {
        match self {
            Store::File(s) => s.record(id, edit, detail).await,
            Store::Postgres(s) => s.record(id, edit, detail).await,
        }
    }

    /// An integration's history (a deleted one's too), newest first, at most
    /// [`history::KEPT`] entries.
    pub async fn history(&self, id: &str) -> Result<Vec<Entry>, StoreError> {
        match self {
            Store::File(s) => s.history(id).await,
            Store::Postgres(s) => s.history(id).await,
        }
    }

    /// The validated set, as the services hold it.
    pub async fn integrations(&self, env: &HashMap<String, String>) -> Result<Integrations, StoreError> {
        let forms = self.list().await?.into_iter().map(|v| v.form).collect();
        Ok(Integrations::from_forms(forms, env)?)
    }
}

fn validate(form: &IntegrationForm, env: &HashMap<String, String>) -> Result<(), ConfigError> {
    form.clone().validate(0, env).map(drop)
}

#[cfg(test)]
pub(crate) mod tests;
