//! `integrations.toml`: one `[[integration]]` per connected Verbox site (docs/integrations.md).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use chrono_tz::Tz;
use serde::Deserialize;

use crate::event::EventKind;
use crate::secret::Secret;
use crate::settings::ConfigError;

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

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_toml(&text, &env).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax { path: path.display().to_string(), message },
            other => other,
        })
    }

    pub fn from_toml(text: &str, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: String::new(),
            message: crate::settings::syntax_message(&e, text),
        })?;
        let file: RawFile = crate::settings::deserialize_naming_key(value)?;
        let mut by_id = HashMap::new();
        for (index, raw) in file.integration.into_iter().enumerate() {
            let integration = raw.validate(index, env)?;
            let key = format!("integration[{index}].id");
            if by_id.contains_key(&integration.id) {
                return Err(ConfigError::invalid(key, format!("`{}` is used twice", integration.id)));
            }
            by_id.insert(integration.id.clone(), Arc::new(integration));
        }
        Ok(Integrations { by_id })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    integration: Vec<RawIntegration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegration {
    id: String,
    #[serde(default = "yes")]
    active: bool,
    webhook_token: Option<Secret>,
    webhook_token_env: Option<String>,
    verbox_secret_key: Option<Secret>,
    verbox_secret_key_env: Option<String>,
    #[serde(default = "yes")]
    offline_enabled: bool,
    #[serde(default = "default_api")]
    comagic_api: String,
    comagic_token: Option<Secret>,
    comagic_token_env: Option<String>,
    employee_id: u64,
    #[serde(default = "default_timezone")]
    timezone: String,
    #[serde(default = "default_session_key")]
    session_key: String,
    default: RawTarget,
    #[serde(default)]
    messengers: BTreeMap<String, RawTarget>,
    chat_events: Option<Vec<String>>,
    offline_events: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    campaign_id: Option<i64>,
    site_id: Option<i64>,
    source_id: Option<i64>,
}

fn yes() -> bool {
    true
}
fn default_api() -> String {
    "https://dataapi.comagic.ru/v2.0".into()
}
fn default_timezone() -> String {
    "Europe/Moscow".into()
}
fn default_session_key() -> String {
    "comagic_session_id".into()
}

pub const MIN_WEBHOOK_TOKEN_LEN: usize = 24;

impl RawIntegration {
    fn validate(self, index: usize, env: &HashMap<String, String>) -> Result<Integration, ConfigError> {
        let key = |field: &str| format!("integration[{index}].{field}");
        let id_ok = (1..=64).contains(&self.id.len())
            && self.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(ConfigError::invalid(key("id"), "must be 1 to 64 of [a-z0-9-]"));
        }
        let secret = |field: &str, value: Option<Secret>, var: Option<String>| -> Result<Option<Secret>, ConfigError> {
            match (value, var) {
                (value, None) => Ok(value),
                (None, Some(var)) => match env.get(&var).filter(|v| !v.is_empty()) {
                    Some(v) => Ok(Some(Secret::new(v.clone()))),
                    None => Err(ConfigError::invalid(
                        key(&format!("{field}_env")),
                        format!("environment variable {var} is not set"),
                    )),
                },
                (Some(_), Some(_)) => {
                    Err(ConfigError::invalid(key(field), format!("set {field} or {field}_env, not both")))
                }
            }
        };
        let webhook_token = secret("webhook_token", self.webhook_token, self.webhook_token_env)?
            .ok_or_else(|| ConfigError::invalid(key("webhook_token"), "is required (or webhook_token_env)"))?;
        let token = webhook_token.expose();
        if token.len() < MIN_WEBHOOK_TOKEN_LEN
            || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::invalid(
                key("webhook_token"),
                format!("must be at least {MIN_WEBHOOK_TOKEN_LEN} characters of [A-Za-z0-9_-]"),
            ));
        }
        let verbox_secret_key = secret("verbox_secret_key", self.verbox_secret_key, self.verbox_secret_key_env)?;
        if !(self.comagic_api.starts_with("https://") || self.comagic_api.starts_with("http://")) {
            return Err(ConfigError::invalid(key("comagic_api"), "must be an http(s) URL"));
        }
        let comagic_token = secret("comagic_token", self.comagic_token, self.comagic_token_env)?
            .ok_or_else(|| ConfigError::invalid(key("comagic_token"), "is required (or comagic_token_env)"))?;
        if comagic_token.expose().is_empty() {
            return Err(ConfigError::invalid(key("comagic_token"), "must not be empty"));
        }
        if self.employee_id == 0 {
            return Err(ConfigError::invalid(key("employee_id"), "must be a CoMagic employee id"));
        }
        let timezone: Tz = self.timezone.parse().map_err(|_| {
            ConfigError::invalid(
                key("timezone"),
                "is not an IANA time zone like Europe/Moscow (the value is not shown: it may be a pasted secret)",
            )
        })?;
        if self.session_key.trim().is_empty() {
            return Err(ConfigError::invalid(key("session_key"), "must not be empty"));
        }
        let default = self.default.validate(&key("default"))?;
        let mut messengers = BTreeMap::new();
        for (name, target) in self.messengers {
            let field = key(&format!("messengers.{name}"));
            if !MESSENGERS.contains(&name.as_str()) {
                return Err(ConfigError::invalid(
                    field,
                    format!("unknown messenger; known: {}", MESSENGERS.join(", ")),
                ));
            }
            messengers.insert(name, target.validate(&field)?);
        }
        for (field, list) in [("chat_events", &self.chat_events), ("offline_events", &self.offline_events)] {
            if list.as_ref().is_some_and(|l| l.is_empty() || l.iter().any(|e| e.trim().is_empty())) {
                return Err(ConfigError::invalid(key(field), "must list at least one non-empty event id"));
            }
        }
        Ok(Integration {
            id: self.id,
            active: self.active,
            webhook_token,
            verbox_secret_key: verbox_secret_key.filter(|s| !s.expose().is_empty()),
            offline_enabled: self.offline_enabled,
            comagic_api: self.comagic_api,
            comagic_token,
            employee_id: self.employee_id,
            timezone,
            session_key: self.session_key,
            default,
            messengers,
            chat_events: self.chat_events,
            offline_events: self.offline_events,
        })
    }
}

impl RawTarget {
    fn validate(&self, key: &str) -> Result<Target, ConfigError> {
        let positive = |field: &str, v: i64| {
            u64::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| {
                ConfigError::invalid(format!("{key}.{field}"), "must be a positive id (-1 is not allowed for chats)")
            })
        };
        match (self.campaign_id, self.site_id, self.source_id) {
            (Some(campaign), None, None) => Ok(Target::Campaign { campaign_id: positive("campaign_id", campaign)? }),
            (None, Some(site), Some(source)) => Ok(Target::SiteSource {
                site_id: positive("site_id", site)?,
                source_id: positive("source_id", source)?,
            }),
            _ => Err(ConfigError::invalid(key, "give exactly one of { campaign_id } or { site_id, source_id }")),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
