//! The change history of the integrations: who did what to which integration, when, from which
//! version to which, and which fields changed, kept by the store beside the forms so a save and
//! its entry share a fate (one statement in PostgreSQL; see [`super::FileStore`] for the file).
//! Every entry keeps the form as it was left (for a restore), secrets included: the store writes it
//! out, but nothing else does (the admin API shows an entry without its form). At most
//! [`KEPT`] entries per integration are kept, the oldest dropped first, so the history cannot grow
//! without bound.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::integrations::IntegrationForm;

/// Entries kept per integration.
pub const KEPT: usize = 50;

/// What was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    Created,
    Updated,
    Deactivated,
    Deleted,
    /// A save of the form an earlier version had.
    Restored {
        restored_from: String,
    },
    /// Dead letters replayed; the detail says how many.
    Replayed,
    /// Dead letters purged; the detail says how many.
    Purged,
}

/// Who does what: given to every change of the store.
#[derive(Debug, Clone)]
pub struct Edit {
    pub who: String,
    pub action: Action,
}

impl Edit {
    pub fn new(who: &str, action: Action) -> Self {
        Edit { who: who.to_owned(), action }
    }
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at: DateTime<Utc>,
    pub who: String,
    #[serde(flatten)]
    pub action: Action,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    /// The names of the fields the change set differently (a secret's name only, never its value).
    pub changed: Vec<String>,
    /// What a dead-letter action did, as `deliver dlq` says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The form as the change left it (as it was, for a delete); `None` for dead-letter actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<IntegrationForm>,
}

impl Entry {
    /// The entry of a change of the form from `before` to `after` (either absent: a create, a delete).
    pub(super) fn of_change(edit: &Edit, before: Option<&IntegrationForm>, after: Option<&IntegrationForm>) -> Self {
        let kept = match &edit.action {
            Action::Deleted => before,
            _ => after,
        };
        Entry {
            at: Utc::now(),
            who: edit.who.clone(),
            action: edit.action.clone(),
            from_version: before.map(super::version_of),
            to_version: after.map(super::version_of),
            changed: changed_fields(before, after),
            detail: None,
            form: kept.cloned(),
        }
    }

    /// The entry of an action on the integration's dead letters, at its `version`.
    pub(super) fn of_action(edit: &Edit, version: &str, detail: &str) -> Self {
        Entry {
            at: Utc::now(),
            who: edit.who.clone(),
            action: edit.action.clone(),
            from_version: Some(version.to_owned()),
            to_version: Some(version.to_owned()),
            changed: Vec::new(),
            detail: Some(detail.to_owned()),
            form: None,
        }
    }

    /// The entry as the store writes it (the form's secrets included).
    pub(super) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an entry serialises")
    }
}

/// The top-level fields of a form that differ between the two (all of them set, against none).
fn changed_fields(before: Option<&IntegrationForm>, after: Option<&IntegrationForm>) -> Vec<String> {
    let fields = |form: Option<&IntegrationForm>| match form.map(serde_json::to_value) {
        Some(Ok(serde_json::Value::Object(map))) => map,
        _ => serde_json::Map::new(),
    };
    let (before, after) = (fields(before), fields(after));
    let mut names: Vec<String> =
        before.keys().chain(after.keys()).filter(|k| before.get(*k) != after.get(*k)).cloned().collect();
    names.sort();
    names.dedup();
    names
}

/// The form a version had, from an integration's history (newest first).
pub fn form_at(history: &[Entry], version: &str) -> Option<IntegrationForm> {
    history.iter().filter_map(|e| e.form.as_ref()).find(|f| super::version_of(f) == version).cloned()
}
