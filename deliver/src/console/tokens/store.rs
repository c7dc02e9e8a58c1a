//! Where issued tokens are kept: beside the integrations, so consoles that share the
//! integrations share their tokens too. The file store keeps `console-tokens.json` beside
//! `integrations.toml` (mode 0600); the PostgreSQL store a table (migration 0004). Both are read
//! on every request that presents an issued token (no cache), so a revocation or an expiry holds
//! at once, on every replica. Only the token's SHA-256 is kept: a token has 256 random bits, so
//! no salt or slow hash is needed, and a copy of the store lets no one in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bridge_shared::disk;
use bridge_shared::integrations::store::Location;
use bridge_shared::postgres::{Database, DbError, Postgres, Role as DbRole};
use bridge_shared::secret::Secret;
use serde::{Deserialize, Serialize};

use crate::console::principal::Role;

const MIGRATION: &str = include_str!("../../../../shared/migrations/0004_console_tokens.sql");
const MIGRATION_LOCK: i64 = 0x0076_6572_6274_6f6b;
/// The file store's file, in the directory of `integrations.toml`.
pub const FILE_NAME: &str = "console-tokens.json";

/// One issued token as stored: everything but the token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub access: Role,
    pub read_only: bool,
    pub issued_by: String,
    /// Unix seconds, as every time here.
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// The token's SHA-256, hex.
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    #[error("console tokens file {path}: {message}")]
    File { path: String, message: String },
    /// The message says what failed, never the database URL.
    #[error("console tokens database: {0}")]
    Database(#[from] DbError),
}

/// The file as written: each record as JSON, read one at a time.
#[derive(Default, Serialize, Deserialize)]
struct TokensFile {
    tokens: Vec<serde_json::Value>,
}

/// The file as read: its records, and those that do not read (a hand edit, a record of another
/// release), which admit no one and are written back as they were, so one of them locks no one
/// else out and is not lost by the next edit.
#[derive(Default)]
struct ReadTokens {
    records: Vec<Record>,
    unreadable: Vec<serde_json::Value>,
}

impl ReadTokens {
    fn of(file: TokensFile, path: &Path) -> Self {
        let mut read = ReadTokens::default();
        for value in file.tokens {
            match serde_json::from_value(value.clone()) {
                Ok(record) => read.records.push(record),
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "a console token record is unreadable; it admits no one");
                    read.unreadable.push(value);
                }
            }
        }
        read
    }

    /// Marks revoked the unreadable records that name `access` (another release may read them):
    /// how many.
    fn revoke_unreadable_of(&mut self, access: &Role, at: i64) -> u64 {
        let Ok(access) = serde_json::to_value(access) else { return 0 };
        let live = self.unreadable.iter_mut().filter_map(serde_json::Value::as_object_mut).filter(|record| {
            record.get("access") == Some(&access) && record.get("revoked_at").is_none_or(serde_json::Value::is_null)
        });
        live.map(|record| record.insert("revoked_at".into(), at.into())).count() as u64
    }

    fn into_file(self) -> TokensFile {
        let records = self.records.iter().filter_map(|record| serde_json::to_value(record).ok());
        TokensFile { tokens: records.chain(self.unreadable).collect() }
    }
}

pub enum TokenStore {
    /// `writing` keeps two saves of this process from losing one another's record; it is held
    /// until a save's disk work has ended, even one its request stopped waiting for.
    File {
        path: PathBuf,
        writing: Arc<tokio::sync::Mutex<()>>,
        disk: disk::Disk,
    },
    Postgres {
        database: Database,
        scope: String,
    },
}

/// A row's role, or `None` for a row edited by hand into something that admits no one.
fn role_of(role: &str, integration: Option<String>) -> Option<Role> {
    match (role, integration) {
        ("operator", None) => Some(Role::Operator),
        ("tenant", Some(id)) => Some(Role::Tenant(id)),
        _ => None,
    }
}

fn record_of(row: &tokio_postgres::Row) -> Option<Record> {
    Some(Record {
        id: row.get(0),
        name: row.get(1),
        access: role_of(row.get(2), row.get(3))?,
        read_only: row.get(4),
        issued_by: row.get(5),
        issued_at: row.get(6),
        expires_at: row.get(7),
        revoked_at: row.get(8),
        hash: row.get(9),
    })
}

const COLUMNS: &str = "id, name, role, integration, read_only, issued_by, issued_at, expires_at, revoked_at, hash";

impl TokenStore {
    /// The store beside `location`'s integrations (for PostgreSQL: its migration applied).
    pub async fn open(location: &Location, postgres: &Postgres) -> Result<Self, TokenStoreError> {
        Ok(match location {
            Location::File(path) => TokenStore::File {
                path: path.with_file_name(FILE_NAME),
                writing: Default::default(),
                disk: Default::default(),
            },
            Location::Postgres { url, scope } => {
                let database = postgres.database(url, DbRole::Integrations)?;
                database.migrate(MIGRATION_LOCK, MIGRATION).await?;
                TokenStore::Postgres { database, scope: scope.clone() }
            }
        })
    }

    fn file_error(path: &Path, error: impl std::fmt::Display) -> TokenStoreError {
        TokenStoreError::File { path: path.display().to_string(), message: error.to_string() }
    }

    fn read_now(path: &Path) -> Result<ReadTokens, TokenStoreError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let file = serde_json::from_slice(&bytes).map_err(|e| Self::file_error(path, e))?;
                Ok(ReadTokens::of(file, path))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ReadTokens::default()),
            Err(e) => Err(Self::file_error(path, e)),
        }
    }

    /// The file's records, read on the blocking pool ([`disk`]).
    async fn read_file(path: &Path, disk: &disk::Disk) -> Result<Vec<Record>, TokenStoreError> {
        let owned = path.to_owned();
        disk.run(move || Self::read_now(&owned)).await.map_err(|e| Self::file_error(path, e))?.map(|read| read.records)
    }

    /// Reads the file, lets `edit` change its records and writes it back (replaced whole,
    /// readable by its owner only), one edit at a time, on the blocking pool.
    async fn edit_file<T: Send + 'static>(
        path: &Path,
        writing: &Arc<tokio::sync::Mutex<()>>,
        disk: &disk::Disk,
        edit: impl FnOnce(&mut ReadTokens) -> T + Send + 'static,
    ) -> Result<T, TokenStoreError> {
        let silent = |e: disk::DiskError| Self::file_error(path, e);
        let turn = tokio::time::timeout(disk::DISK_WORK_FOR, writing.clone().lock_owned());
        let turn = turn.await.map_err(|_| silent(disk::DiskError::Silent))?;
        let owned = path.to_owned();
        let work = move || {
            let _turn = turn;
            let mut read = Self::read_now(&owned)?;
            let done = edit(&mut read);
            let json = serde_json::to_vec_pretty(&read.into_file()).map_err(|e| Self::file_error(&owned, e))?;
            disk::replace(&owned, "json.tmp", &[&json]).map_err(|e| Self::file_error(&owned, e))?;
            Ok(done)
        };
        disk.run(work).await.map_err(silent)?
    }

    pub async fn add(&self, record: &Record) -> Result<(), TokenStoreError> {
        match self {
            TokenStore::File { path, writing, disk } => {
                let record = record.clone();
                Self::edit_file(path, writing, disk, move |read| read.records.push(record)).await
            }
            TokenStore::Postgres { database, scope } => {
                let (role, integration) = record.access.parts();
                database
                    .execute(
                        &format!("INSERT INTO bridge_console_tokens (scope, {COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
                        &[&scope, &record.id, &record.name, &role, &integration, &record.read_only, &record.issued_by,
                          &record.issued_at, &record.expires_at, &record.revoked_at, &record.hash],
                    )
                    .await?;
                Ok(())
            }
        }
    }

    /// Every issued token, the newest first.
    pub async fn list(&self) -> Result<Vec<Record>, TokenStoreError> {
        let mut records = match self {
            TokenStore::File { path, disk, .. } => Self::read_file(path, disk).await?,
            TokenStore::Postgres { database, scope } => database
                .query(&format!("SELECT {COLUMNS} FROM bridge_console_tokens WHERE scope = $1"), &[&scope])
                .await?
                .iter()
                .filter_map(record_of)
                .collect(),
        };
        records.sort_by(|a, b| b.issued_at.cmp(&a.issued_at).then_with(|| a.id.cmp(&b.id)));
        Ok(records)
    }

    /// The token whose hash is `hash`. The file's records are all compared, in constant time; the
    /// database looks the hash up by its index (what a lookup's timing could tell is about a
    /// hash, which says nothing of any token).
    pub async fn find(&self, hash: &str) -> Result<Option<Record>, TokenStoreError> {
        match self {
            TokenStore::File { path, disk, .. } => {
                let tokens = Self::read_file(path, disk).await?;
                Ok(tokens
                    .into_iter()
                    .fold(None, |found, r| found.or(Secret::new(r.hash.clone()).matches(hash).then_some(r))))
            }
            TokenStore::Postgres { database, scope } => Ok(database
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM bridge_console_tokens WHERE scope = $1 AND hash = $2"),
                    &[&scope, &hash],
                )
                .await?
                .as_ref()
                .and_then(record_of)),
        }
    }

    /// Revokes, at `at`, every tenant token of integration `integration` not revoked yet (before
    /// the integration is deleted: an id created again later is someone else's); how many.
    pub async fn revoke_tenants_of(&self, integration: &str, at: i64) -> Result<u64, TokenStoreError> {
        match self {
            TokenStore::File { path, writing, disk } => {
                let of = Role::Tenant(integration.to_owned());
                Self::edit_file(path, writing, disk, move |read| {
                    let live = read.records.iter_mut().filter(|r| r.access == of && r.revoked_at.is_none());
                    let revoked = live.map(|r| r.revoked_at = Some(at)).count() as u64;
                    revoked + read.revoke_unreadable_of(&of, at)
                })
                .await
            }
            TokenStore::Postgres { database, scope } => Ok(database
                .execute(
                    "UPDATE bridge_console_tokens SET revoked_at = $3
                     WHERE scope = $1 AND role = 'tenant' AND integration = $2 AND revoked_at IS NULL",
                    &[&scope, &integration, &at],
                )
                .await?),
        }
    }

    /// Marks token `id` revoked at `at` (a second revocation keeps the first time); `None` when
    /// there is no such token.
    pub async fn revoke(&self, id: &str, at: i64) -> Result<Option<Record>, TokenStoreError> {
        match self {
            TokenStore::File { path, writing, disk } => {
                let id = id.to_owned();
                Self::edit_file(path, writing, disk, move |read| {
                    let record = read.records.iter_mut().find(|r| r.id == id)?;
                    record.revoked_at = record.revoked_at.or(Some(at));
                    Some(record.clone())
                })
                .await
            }
            TokenStore::Postgres { database, scope } => Ok(database
                .query_opt(
                    &format!(
                        "UPDATE bridge_console_tokens SET revoked_at = COALESCE(revoked_at, $3)
                         WHERE scope = $1 AND id = $2 RETURNING {COLUMNS}"
                    ),
                    &[&scope, &id, &at],
                )
                .await?
                .as_ref()
                .and_then(record_of)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            name: "a tenant".into(),
            access: Role::Tenant("acme".into()),
            read_only: false,
            issued_by: "ops".into(),
            issued_at: 1,
            expires_at: i64::MAX,
            revoked_at: None,
            hash: format!("hash-of-{id}"),
        }
    }

    #[tokio::test]
    async fn a_record_that_does_not_read_locks_no_one_out_and_survives_an_edit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut good = serde_json::to_value(record("good")).unwrap();
        let foreign = serde_json::json!({"id": "foreign", "access": {"role": "superuser"}, "hash": "x"});
        let newer =
            serde_json::json!({"id": "newer", "access": {"role": "tenant", "integration": "acme"}, "scopes": []});
        good["name"] = "kept".into();
        std::fs::write(&path, serde_json::to_vec(&serde_json::json!({"tokens": [foreign, good, newer]})).unwrap())
            .unwrap();
        let store = TokenStore::File { path: path.clone(), writing: Default::default(), disk: Default::default() };
        assert_eq!(store.find("hash-of-good").await.unwrap().map(|r| r.name), Some("kept".to_owned()));
        store.add(&record("new")).await.unwrap();
        let ids: Vec<String> = store.list().await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["good", "new"]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("superuser"), "the unreadable record is written back: {text}");
        // acme's tokens, the one only another release reads too, are revoked.
        assert_eq!(store.revoke_tenants_of("acme", 7).await.unwrap(), 3);
        let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let newer = file["tokens"].as_array().unwrap().iter().find(|t| t["id"] == "newer").unwrap();
        assert_eq!(newer["revoked_at"], 7, "{newer}");
        assert!(file["tokens"].as_array().unwrap().iter().any(|t| t["id"] == "foreign" && t["revoked_at"].is_null()));
    }
}
