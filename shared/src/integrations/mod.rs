//! `integrations.toml`: one `[[integration]]` per connected Verbox site (docs/integrations.md).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono_tz::Tz;

use crate::event::EventKind;
use crate::secret::Secret;
use crate::settings::ConfigError;

mod form;
pub mod store;

pub use form::{IntegrationForm, IntegrationsFile, TargetForm, MIN_WEBHOOK_TOKEN_LEN};

/// Messenger channels an integration may map. Verbox's channel strings are known only for
/// Instagram; the rest are the obvious lower-case names, and unknown keys are refused so a typo in
/// the config is caught at load instead of silently sending chats to the default.
pub const MESSENGERS: &[&str] = &["telegram", "whatsapp", "viber", "vk", "facebook", "instagram", "avito", "ok"];

/// Channel values that mean "the site widget" rather than a messenger.
const WIDGET_CHANNELS: &[&str] = &["widget", "site", "web", "website", "chat", "online"];

/// Where an event without a session is filed: a campaign, or a site and source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Campaign { campaign_id: u64 },
    SiteSource { site_id: u64, source_id: u64 },
}

#[derive(Debug, Clone)]
pub struct Integration {
    pub id: String,
    pub active: bool,
    pub webhook_token: Secret,
    pub verbox_secret_key: Option<Secret>,
    pub offline_enabled: bool,
    pub comagic_api: String,
    pub comagic_token: Secret,
    pub employee_id: u64,
    pub timezone: Tz,
    pub session_key: String,
    pub default: Target,
    pub messengers: BTreeMap<String, Target>,
    pub chat_events: Option<Vec<String>>,
    pub offline_events: Option<Vec<String>>,
}

/// Event ids known not to be "dialog finished"; refused on the chat URL unless configured.
const NON_FINAL_CHAT_EVENTS: &[&str] = &["newMessageFromClient", "dialogStarted", "newOfflineQuestion"];

impl Integration {
    /// Whether a webhook with this `eventId` is one this URL delivers (docs/webhook-api.md).
    pub fn accepts_event(&self, kind: EventKind, event_name: Option<&str>) -> bool {
        let configured = match kind {
            EventKind::Chat => &self.chat_events,
            EventKind::Offline => &self.offline_events,
        };
        if let Some(list) = configured {
            return event_name.is_some_and(|name| list.iter().any(|e| e == name));
        }
        match (kind, event_name) {
            (EventKind::Offline, None) => true,
            (EventKind::Offline, Some(name)) => name == "newOfflineQuestion",
            (EventKind::Chat, None) => true,
            (EventKind::Chat, Some(name)) => {
                !NON_FINAL_CHAT_EVENTS.contains(&name) && !name.starts_with("clientFillForm")
            }
        }
    }

    /// The messenger mapping for a channel, if the channel is a messenger this integration maps.
    pub fn messenger_target(&self, channel: Option<&str>) -> Option<Target> {
        let channel = channel?;
        if WIDGET_CHANNELS.contains(&channel) {
            return None;
        }
        self.messengers.get(channel).copied()
    }
}

/// The validated set of integrations, looked up by id.
#[derive(Debug, Clone, Default)]
pub struct Integrations {
    by_id: HashMap<String, Arc<Integration>>,
}

impl Integrations {
    pub fn get(&self, id: &str) -> Option<&Arc<Integration>> {
        self.by_id.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Integration>> {
        let mut all: Vec<_> = self.by_id.values().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all.into_iter()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn from_toml(text: &str, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: String::new(),
            message: crate::settings::syntax_message(&e, text),
        })?;
        let file: IntegrationsFile = crate::settings::deserialize_naming_key(value)?;
        Self::from_forms(file.integration, env)
    }

    /// Validates every form; ids must be unique.
    pub fn from_forms(forms: Vec<IntegrationForm>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut by_id = HashMap::new();
        for (index, form) in forms.into_iter().enumerate() {
            let integration = form.validate(index, env)?;
            let key = format!("integration[{index}].id");
            if by_id.contains_key(&integration.id) {
                return Err(ConfigError::invalid(key, format!("`{}` is used twice", integration.id)));
            }
            by_id.insert(integration.id.clone(), Arc::new(integration));
        }
        Ok(Integrations { by_id })
    }
}

#[cfg(test)]
pub(crate) mod tests;
