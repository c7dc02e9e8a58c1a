//! One integration as it is written (in `integrations.toml`, in the PostgreSQL store, in the admin
//! API's body) and its validation into an [`Integration`]. Secrets are written out only by the
//! stores; the admin API shows them masked ([`IntegrationForm::masked`]).

use std::collections::{BTreeMap, HashMap};

use chrono_tz::Tz;
use serde::{Deserialize, Serialize, Serializer};

use super::{Integration, Target, MESSENGERS};
use crate::secret::{is_placeholder, Secret};
use crate::settings::ConfigError;

/// `integrations.toml` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationsFile {
    #[serde(default)]
    pub integration: Vec<IntegrationForm>,
}

/// The stores write secrets out; nothing else serialises a form with them (see [`IntegrationForm::masked`]).
fn secret_in_store<S: Serializer>(value: &Option<Secret>, serializer: S) -> Result<S::Ok, S::Error> {
    value.as_ref().map(Secret::expose).serialize(serializer)
}

/// An integration as written: every key of docs/integrations.md, secrets inline or named by
/// environment variable.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationForm {
    pub id: String,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default, serialize_with = "secret_in_store", skip_serializing_if = "Option::is_none")]
    pub webhook_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_token_env: Option<String>,
    #[serde(default, serialize_with = "secret_in_store", skip_serializing_if = "Option::is_none")]
    pub verbox_secret_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbox_secret_key_env: Option<String>,
    #[serde(default = "yes")]
    pub offline_enabled: bool,
    #[serde(default = "default_api")]
    pub comagic_api: String,
    #[serde(default, serialize_with = "secret_in_store", skip_serializing_if = "Option::is_none")]
    pub comagic_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comagic_token_env: Option<String>,
    pub employee_id: u64,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default = "default_session_key")]
    pub session_key: String,
    pub default: TargetForm,
    #[serde(default)]
    pub messengers: BTreeMap<String, TargetForm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_events: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_events: Option<Vec<String>>,
}

/// `{ campaign_id }` or `{ site_id, source_id }`, as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetForm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<i64>,
}

fn yes() -> bool {
    true
}
fn default_api() -> String {
    IntegrationForm::DEFAULT_COMAGIC_API.into()
}
fn default_timezone() -> String {
    "Europe/Moscow".into()
}
fn default_session_key() -> String {
    "comagic_session_id".into()
}

pub const MIN_WEBHOOK_TOKEN_LEN: usize = 24;

/// The longest `session_key`. It is a `customData` key, and it is written into the site script
/// the tenant pastes into their pages: anything beyond a plain name (a quote, `</script>`) would
/// be code in the tenant's site.
pub const MAX_SESSION_KEY_LEN: usize = 64;

fn session_key_ok(key: &str) -> bool {
    (1..=MAX_SESSION_KEY_LEN).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// An integration's id: 1 to 64 of `[a-z0-9-]` (it is a path segment of the webhook URLs and a
/// metric's label).
pub(crate) fn id_ok(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What is wrong with a webhook token, if anything: it is a URL's path segment and the only
/// proof of who sends a webhook.
pub(super) fn webhook_token_problem(token: &str) -> Option<String> {
    if token.len() < MIN_WEBHOOK_TOKEN_LEN
        || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Some(format!("must be at least {MIN_WEBHOOK_TOKEN_LEN} characters of [A-Za-z0-9_-]"))
    } else if is_placeholder(token) {
        Some("is a sample's placeholder: set a random token".into())
    } else {
        None
    }
}

/// The messenger mappings, each a known messenger's (errors name `{key}.{messenger}`).
fn messengers_validated(
    messengers: BTreeMap<String, TargetForm>,
    key: &str,
) -> Result<BTreeMap<String, Target>, ConfigError> {
    let mut validated = BTreeMap::new();
    for (name, target) in messengers {
        let field = format!("{key}.{name}");
        if !MESSENGERS.contains(&name.as_str()) {
            return Err(ConfigError::invalid(field, format!("unknown messenger; known: {}", MESSENGERS.join(", "))));
        }
        validated.insert(name, target.validate(&field)?);
    }
    Ok(validated)
}

impl IntegrationForm {
    /// CoMagic's Data API, which an integration uses unless it names another.
    pub const DEFAULT_COMAGIC_API: &'static str = "https://dataapi.comagic.ru/v2.0";

    /// Validates into an [`Integration`]; errors name `integration[index].field`.
    pub fn validate(self, index: usize, env: &HashMap<String, String>) -> Result<Integration, ConfigError> {
        let key = |field: &str| format!("integration[{index}].{field}");
        if !id_ok(&self.id) {
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
        webhook_token_problem(webhook_token.expose())
            .map_or(Ok(()), |problem| Err(ConfigError::invalid(key("webhook_token"), problem)))?;
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
        if !session_key_ok(&self.session_key) {
            return Err(ConfigError::invalid(
                key("session_key"),
                format!("must be 1 to {MAX_SESSION_KEY_LEN} letters, digits, `_`, `-` or `.`: a customData key"),
            ));
        }
        let default = self.default.validate(&key("default"))?;
        let messengers = messengers_validated(self.messengers, &key("messengers"))?;
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

impl TargetForm {
    pub fn validate(&self, key: &str) -> Result<Target, ConfigError> {
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
