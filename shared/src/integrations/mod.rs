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
use store::{Stored, Versioned};

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

/// An integration the set could not take at its stored version: the version refused and why.
/// The reason is a [`ConfigError`]'s message (which names fields and variables, never a
/// value), cut to [`REASON_MAX`] characters and cleared of quotes and line breaks, so it can be
/// a metric's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub version: String,
    pub reason: String,
    /// The stored version's webhook token, where it could be read: a webhook that presents it is
    /// told to come back later (its settings will be fixed), not that its URL does not exist.
    pub webhook_token: Option<Secret>,
}

/// The longest [`Refused::reason`], in characters.
pub const REASON_MAX: usize = 160;

impl Refused {
    fn new(version: String, error: &ConfigError, webhook_token: Option<Secret>) -> Self {
        let message = error.to_string();
        // `integration[3].comagic_token_env: …`: the position differs between readers; the field does not.
        let message = match message.split_once("].") {
            Some((head, rest)) if head.starts_with("integration[") => rest.to_owned(),
            _ => message,
        };
        let reason = message
            .chars()
            .map(|c| {
                if c == '"' || c == '\\' {
                    '\''
                } else if c.is_control() {
                    ' '
                } else {
                    c
                }
            })
            .take(REASON_MAX)
            .collect();
        Refused { version, reason, webhook_token }
    }
}

/// The validated set of integrations, looked up by id, with the store's version of each; and,
/// when it was built leniently ([`Integrations::applying`]), the integrations it refused.
#[derive(Debug, Clone, Default)]
pub struct Integrations {
    by_id: HashMap<String, Arc<Integration>>,
    versions: HashMap<String, String>,
    refused: BTreeMap<String, Refused>,
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

    /// The store's version of the integration in force under `id`.
    pub fn version(&self, id: &str) -> Option<&str> {
        self.versions.get(id).map(String::as_str)
    }

    /// The integrations refused at their stored version, in id order; each is absent from the
    /// set, or in it at its last good version.
    pub fn refused(&self) -> impl Iterator<Item = (&str, &Refused)> {
        self.refused.iter().map(|(id, refused)| (id.as_str(), refused))
    }

    /// Why `id` is not in force at all: refused at its stored version with no good version to keep
    /// (`None` for an id in force, at any version, and for one the store does not hold). Its events
    /// wait for a fix; they are not an unknown integration's.
    pub fn refused_outright(&self, id: &str) -> Option<&Refused> {
        self.refused.get(id).filter(|_| !self.by_id.contains_key(id))
    }

    /// The set as stored, one integration at a time: each that validates (against `env`) is in
    /// force at its stored version; each that does not, or does not read, is refused, and stays at
    /// its version in `last_good` if it had one there (absent otherwise). An id stored twice (a
    /// hand edit of the file) is refused as a whole: which of the two is meant is not for a reader
    /// to guess.
    pub fn applying(stored: Stored, env: &HashMap<String, String>, last_good: &Integrations) -> Self {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let ids = stored.readable.iter().map(|v| &v.form.id).chain(stored.unreadable.iter().map(|u| &u.id));
        for id in ids {
            *seen.entry(id.clone()).or_default() += 1;
        }
        // Only a token that could be one: a placeholder or a short one would let anyone learn that
        // the id exists.
        let token = |value: &Option<Secret>, var: &Option<String>| {
            let token = value.clone().or_else(|| var.as_ref().and_then(|name| env.get(name)).map(Secret::new));
            token.filter(|t| form::webhook_token_problem(t.expose()).is_none())
        };
        let mut set = Integrations::default();
        for (index, Versioned { form, version }) in stored.readable.into_iter().enumerate() {
            let id = form.id.clone();
            let webhook_token = token(&form.webhook_token, &form.webhook_token_env);
            let validated = if seen[&id] > 1 {
                Err(ConfigError::invalid(format!("integration[{index}].id"), format!("`{id}` is used twice")))
            } else {
                form.validate(index, env)
            };
            match validated {
                Ok(integration) => {
                    set.versions.insert(id.clone(), version);
                    set.by_id.insert(id, Arc::new(integration));
                }
                Err(error) => set.refuse(id, Refused::new(version, &error, webhook_token), last_good),
            }
        }
        for unreadable in stored.unreadable {
            let webhook_token = token(&unreadable.webhook_token, &unreadable.webhook_token_env);
            let refused = Refused::new(unreadable.version, &unreadable.error, webhook_token);
            set.refuse(unreadable.id, refused, last_good);
        }
        set
    }

    /// Refuses `id`, keeping its version in `last_good` in force if it had one.
    fn refuse(&mut self, id: String, refused: Refused, last_good: &Integrations) {
        if let (Some(good), Some(good_version)) = (last_good.by_id.get(&id), last_good.versions.get(&id)) {
            self.by_id.insert(id.clone(), good.clone());
            self.versions.insert(id.clone(), good_version.clone());
        }
        self.refused.insert(id, refused);
    }

    pub fn from_toml(text: &str, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: String::new(),
            message: crate::settings::syntax_message(&e, text),
        })?;
        let file: IntegrationsFile = crate::settings::deserialize_naming_key(value)?;
        Self::from_forms(file.integration, env)
    }

    /// Validates every form, all or nothing (what a save may write, what a command reads); ids
    /// must be unique.
    pub fn from_forms(forms: Vec<IntegrationForm>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut set = Integrations::default();
        for (index, form) in forms.into_iter().enumerate() {
            let version = store::version_of(&form);
            let integration = form.validate(index, env)?;
            let key = format!("integration[{index}].id");
            if set.by_id.contains_key(&integration.id) {
                return Err(ConfigError::invalid(key, format!("`{}` is used twice", integration.id)));
            }
            set.versions.insert(integration.id.clone(), version);
            set.by_id.insert(integration.id.clone(), Arc::new(integration));
        }
        Ok(set)
    }
}

#[cfg(test)]
pub(crate) mod tests;
