//! The PostgreSQL store: a row per integration, its form as JSON, its version beside it. A save
//! is one conditional statement (an insert that only succeeds on a new id, an update that only
//! succeeds on the version it was based on), and the table's trigger notifies [`CHANGES_CHANNEL`]
//! so every process reloads within moments.

use super::{StoreError, Versioned};
use crate::integrations::IntegrationForm;
use crate::postgres::{Database, Listener};

const MIGRATION: &str = include_str!("../../../migrations/0001_integrations.sql");
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

fn parse(id: &str, doc: &str) -> Result<IntegrationForm, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::File(format!("the stored form of `{id}` is unreadable: {e}")))
}

impl PgStore {
    /// Applies the migration; fails when the database does not answer.
    pub async fn connect(database: Database, scope: &str) -> Result<Self, StoreError> {
        let store = PgStore { database, scope: scope.to_owned() };
        store.database.migrate(MIGRATION_LOCK, MIGRATION).await?;
        Ok(store)
    }

    /// Waits for the next change to this scope's integrations: `Some` on a change, `None` when
    /// the listening connection ended or stopped answering (the caller reloads and listens again).
    pub async fn listen(&self) -> Result<Changes, StoreError> {
        let notifications = self.database.listen(CHANGES_CHANNEL).await?;
        Ok(Changes { notifications, scope: self.scope.clone() })
    }

    pub async fn list(&self) -> Result<Vec<Versioned>, StoreError> {
        let rows = self
            .database
            .query("SELECT id, doc, version FROM bridge_integrations WHERE scope = $1 ORDER BY id", &[&self.scope])
            .await?;
        rows.iter()
            .map(|row| {
                let id: &str = row.get(0);
                Ok(Versioned { form: parse(id, row.get(1))?, version: row.get(2) })
            })
            .collect()
    }

    pub async fn create(&self, form: IntegrationForm) -> Result<Versioned, StoreError> {
        let saved = Versioned::new(form);
        let doc = serde_json::to_string(&saved.form).expect("a form serialises");
        let inserted = self
            .database
            .execute(
                "INSERT INTO bridge_integrations (scope, id, doc, version) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (scope, id) DO NOTHING",
                &[&self.scope, &saved.form.id, &doc, &saved.version],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::Exists(saved.form.id));
        }
        Ok(saved)
    }

    pub async fn update(&self, form: IntegrationForm, version: &str) -> Result<Versioned, StoreError> {
        let saved = Versioned::new(form);
        let doc = serde_json::to_string(&saved.form).expect("a form serialises");
        let updated = self
            .database
            .execute(
                "UPDATE bridge_integrations SET doc = $3, version = $4, updated_at = now()
                 WHERE scope = $1 AND id = $2 AND version = $5",
                &[&self.scope, &saved.form.id, &doc, &saved.version, &version],
            )
            .await?;
        if updated == 1 {
            return Ok(saved);
        }
        let current = self
            .database
            .query_opt(
                "SELECT version FROM bridge_integrations WHERE scope = $1 AND id = $2",
                &[&self.scope, &saved.form.id],
            )
            .await?;
        Err(match current {
            Some(row) => StoreError::Stale { id: saved.form.id, current: row.get(0) },
            None => StoreError::NotFound(saved.form.id),
        })
    }
}
