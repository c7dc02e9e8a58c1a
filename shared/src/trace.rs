//! Test chats, followed through: the console posts a synthetic finished dialog whose id starts
//! with [`TEST_DIALOG_PREFIX`]; deliver publishes what became of such an event (delivered with
//! which rule and CoMagic id, retrying, paused, dead-lettered, with the mnemonic and the fix) to
//! the topology's traces exchange, where the console listens. Ordinary events are never traced:
//! the check is one prefix comparison per event.

use serde::{Deserialize, Serialize};

use crate::verbox::VerboxEvent;

pub const TEST_DIALOG_PREFIX: &str = "bridge-test-";

/// Whether `event` is a console's test chat.
pub fn is_test(event: &VerboxEvent) -> bool {
    event.dialog_id.as_deref().is_some_and(|id| id.starts_with(TEST_DIALOG_PREFIX))
}

/// What became of a test event, one step at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Empty in a journey's steps (its summary says it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event_id: String,
    /// Empty in a journey's steps (its summary says it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub integration: String,
    pub at: chrono::DateTime<chrono::Utc>,
    /// `delivered`, `duplicate`, `retrying`, `waiting_for_quota`, `paused` or `dead_lettered`.
    pub outcome: String,
    /// The attribution rule the item was sent with (`session`, `messenger`, `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The id CoMagic gave the chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comagic_id: Option<u64>,
    /// The dead-letter class, when it was dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mnemonic: Option<String>,
    /// One line for operators, contacts masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The retry tier it went to (`retrying`, `parked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The deliver replica that took the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The items in the call that delivered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<usize>,
}

impl Trace {
    pub fn new(event_id: &str, integration: &str, outcome: &str) -> Self {
        Trace {
            event_id: event_id.to_owned(),
            integration: integration.to_owned(),
            at: chrono::Utc::now(),
            outcome: outcome.to_owned(),
            rule: None,
            comagic_id: None,
            class: None,
            mnemonic: None,
            error: None,
            fix: None,
            tier: None,
            replica: None,
            items: None,
        }
    }

    /// With the mnemonic that `error` starts with (`campaign_is_inactive: …`) and its fix.
    pub fn with_error(mut self, error: &str) -> Self {
        let mnemonic = error.split(':').next().filter(|m| m.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        if let Some(mnemonic) = mnemonic.filter(|m| !m.is_empty()) {
            self.fix = crate::comagic::mnemonics::fix_for(mnemonic).map(str::to_owned);
            self.mnemonic = Some(mnemonic.to_owned());
        }
        self.error = Some(crate::redact::for_operators(error, 500));
        self
    }
}
