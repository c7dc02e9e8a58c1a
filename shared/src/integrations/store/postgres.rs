//! The PostgreSQL store: a row per integration, its form as JSON, its version beside it. A save
//! is one conditional statement (an insert that only succeeds on a new id, an update that only
//! succeeds on the version it was based on), and the table's trigger notifies [`CHANGES_CHANNEL`]
//! so every process reloads within moments. Each change writes its history entry in the same
//! statement ([`recorded`]), so a crash keeps both or neither.

use super::history::{Edit, Entry, KEPT};
use super::{StoreError, Stored, Unreadable, Versioned};
use crate::integrations::IntegrationForm;
use crate::postgres::{Database, Listener};
use crate::settings::{deserialize_naming_key, ConfigError};

const MIGRATION: &str = include_str!("../../../migrations/0001_integrations.sql");
const HISTORY_MIGRATION: &str = include_str!("../../../migrations/0003_integration_history.sql");
const MIGRATION_LOCK: i64 = 0x7665_7262_6f79;

/// What the services LISTEN on; the payload is the scope that changed.
const CHANGES_CHANNEL: &str = "bridge_integrations";

/// Changes to one scope, as they are notified.
pub struct Changes {
    notifications: Listener,
    scope: String,
}

impl Changes {
    /// The next change to this scope (several in a burst count as one); `None` once the
    /// connection is gone.
    pub async fn next(&mut self) -> Option<()> {
        loop {
            let mut ours = self.notifications.next().await? == self.scope;
            while let Some(scope) = self.notifications.try_next() {
                ours |= scope == self.scope;
            }
            if ours {
                return Some(());
            }
        }
    }
}

pub struct PgStore {
    database: Database,
    scope: String,
}

/// A row's form; the error names the key, never a value.
fn read_form(doc: &str) -> Result<IntegrationForm, ConfigError> {
    deserialize_naming_key(&mut serde_json::Deserializer::from_str(doc))
}

fn parse(id: &str, doc: &str) -> Result<IntegrationForm, StoreError> {
    read_form(doc).map_err(|e| StoreError::File(format!("the stored form of `{id}` is unreadable: {e}")))
}

/// One statement: `change` (a CTE body on `bridge_integrations` returning the `id` it touched),
/// the history entry `$3` of integration `$2` in scope `$1` when it touched one, and the
/// integration's oldest entries beyond [`KEPT`] deleted. Its count is 1 when the change was made.
fn recorded(change: &str) -> String {
    format!(
        "WITH saved AS ({change}),
         trimmed AS (DELETE FROM bridge_integration_history WHERE scope = $1 AND id = $2
             AND EXISTS (SELECT 1 FROM saved)
             AND seq NOT IN (SELECT seq FROM bridge_integration_history WHERE scope = $1 AND id = $2
                             ORDER BY seq DESC LIMIT {}))
         INSERT INTO bridge_integration_history (scope, id, entry) SELECT $1, id, $3 FROM saved",
        KEPT - 1
    )
}

impl PgStore {
    /// Applies the migration; fails when the database does not answer.
    pub async fn connect(database: Database, scope: &str) -> Result<Self, StoreError> {
        let store = PgStore { database, scope: scope.to_owned() };
        store.database.migrate(MIGRATION_LOCK, MIGRATION).await?;
        store.database.migrate(MIGRATION_LOCK, HISTORY_MIGRATION).await?;
        Ok(store)
    }

    /// Waits for the next change to this scope's integrations: `Some` on a change, `None` when
    /// the listening connection ended or stopped answering (the caller reloads and listens again).
    pub async fn listen(&self) -> Result<Changes, StoreError> {
        let notifications = self.database.listen(CHANGES_CHANNEL).await?;
        Ok(Changes { notifications, scope: self.scope.clone() })
    }

    /// Every integration that reads; one that does not (a form a newer release wrote) is left
    /// out and said: each row is saved on its own, so no other is held up by it.
    pub async fn list(&self) -> Result<Vec<Versioned>, StoreError> {
        let stored = self.read_for_services().await?;
        for Unreadable { id, error, .. } in &stored.unreadable {
            tracing::warn!(integration = %id, %error, "a stored integration is unreadable; the console leaves it out");
        }
        Ok(stored.readable)
    }

    /// One integration (its row alone).
    pub async fn get(&self, id: &str) -> Result<Versioned, StoreError> {
        self.current(id).await
    }

    /// Every row for the services: a form that does not read (one a newer release wrote) is
    /// [`Unreadable`], named by its row.
    pub async fn read_for_services(&self) -> Result<Stored, StoreError> {
        let rows = self
            .database
            .query("SELECT id, doc, version FROM bridge_integrations WHERE scope = $1 ORDER BY id", &[&self.scope])
            .await?;
        let mut stored = Stored::default();
        for row in &rows {
            let (id, doc, version): (&str, &str, String) = (row.get(0), row.get(1), row.get(2));
            match read_form(doc) {
                Ok(form) => stored.readable.push(Versioned { form, version }),
                Err(error) => {
                    let raw = serde_json::from_str(doc).unwrap_or_default();
                    stored.unreadable.push(Unreadable::new(id.to_owned(), version, &raw, error));
                }
            }
        }
        Ok(stored)
    }

    /// The integration as stored now.
    async fn current(&self, id: &str) -> Result<Versioned, StoreError> {
        let row = self
            .database
            .query_opt("SELECT doc, version FROM bridge_integrations WHERE scope = $1 AND id = $2", &[&self.scope, &id])
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        Ok(Versioned { form: parse(id, row.get(0))?, version: row.get(1) })
    }

    /// The integration at `version`, or why not.
    async fn at(&self, id: &str, version: &str) -> Result<Versioned, StoreError> {
        let current = self.current(id).await?;
        if current.version == version {
            Ok(current)
        } else {
            Err(StoreError::Stale { id: id.to_owned(), current: current.version })
        }
    }

    pub async fn create(&self, form: IntegrationForm, edit: &Edit) -> Result<Versioned, StoreError> {
        let saved = Versioned::new(form);
        let doc = serde_json::to_string(&saved.form).expect("a form serialises");
        let entry = Entry::of_change(edit, None, Some(&saved.form)).to_json();
        let inserted = self
            .database
            .execute(
                &recorded(
                    "INSERT INTO bridge_integrations (scope, id, doc, version) VALUES ($1, $2, $4, $5)
                     ON CONFLICT (scope, id) DO NOTHING RETURNING id",
                ),
                &[&self.scope, &saved.form.id, &entry, &doc, &saved.version],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::Exists(saved.form.id));
        }
        Ok(saved)
    }

    pub async fn update(&self, form: IntegrationForm, version: &str, edit: &Edit) -> Result<Versioned, StoreError> {
        let before = self.at(&form.id, version).await?;
        let saved = Versioned::new(form);
        let doc = serde_json::to_string(&saved.form).expect("a form serialises");
        let entry = Entry::of_change(edit, Some(&before.form), Some(&saved.form)).to_json();
        let updated = self
            .database
            .execute(
                &recorded(
                    "UPDATE bridge_integrations SET doc = $4, version = $5, updated_at = now()
                     WHERE scope = $1 AND id = $2 AND version = $6 RETURNING id",
                ),
                &[&self.scope, &saved.form.id, &entry, &doc, &saved.version, &version],
            )
            .await?;
        if updated == 1 {
            return Ok(saved);
        }
        // Changed between the read and the save.
        Err(match self.current(&saved.form.id).await {
            Ok(now) => StoreError::Stale { id: saved.form.id, current: now.version },
            Err(e) => e,
        })
    }

    pub async fn delete(&self, id: &str, version: &str, edit: &Edit) -> Result<Versioned, StoreError> {
        let before = self.at(id, version).await?;
        let entry = Entry::of_change(edit, Some(&before.form), None).to_json();
        let deleted = self
            .database
            .execute(
                &recorded("DELETE FROM bridge_integrations WHERE scope = $1 AND id = $2 AND version = $4 RETURNING id"),
                &[&self.scope, &id, &entry, &version],
            )
            .await?;
        if deleted == 1 {
            return Ok(before);
        }
        Err(match self.current(id).await {
            Ok(now) => StoreError::Stale { id: id.to_owned(), current: now.version },
            Err(e) => e,
        })
    }

    /// Records an action on the integration that leaves its form as it is.
    pub async fn record(&self, id: &str, edit: &Edit, detail: &str) -> Result<(), StoreError> {
        let current = self.current(id).await?;
        let entry = Entry::of_action(edit, &current.version, detail).to_json();
        let change = "SELECT id FROM bridge_integrations WHERE scope = $1 AND id = $2";
        self.database.execute(&recorded(change), &[&self.scope, &id, &entry]).await?;
        Ok(())
    }

    /// The integration's history, newest first.
    pub async fn history(&self, id: &str) -> Result<Vec<Entry>, StoreError> {
        let rows = self
            .database
            .query(
                "SELECT entry FROM bridge_integration_history WHERE scope = $1 AND id = $2 ORDER BY seq DESC LIMIT $3",
                &[&self.scope, &id, &(KEPT as i64)],
            )
            .await?;
        // An entry that does not read (one a newer release wrote) is said and skipped, as the
        // file store does, so it hides none of the others.
        let read = |row: &tokio_postgres::Row| match serde_json::from_str(row.get(0)) {
            Ok(entry) => Some(entry),
            Err(error) => {
                tracing::warn!(integration = id, %error, "a history entry is unreadable");
                None
            }
        };
        Ok(rows.iter().filter_map(read).collect())
    }
}
