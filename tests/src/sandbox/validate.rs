//! The documented field rules of `upload.chats` and `upload.offline_messages`. The first violation
//! fails the whole request (the reference assumes all-or-nothing per request).

use chrono::{Duration, NaiveDateTime};
use serde_json::{Map, Value};

use super::config::Account;
use super::rpc::RpcError;

pub const MAX_ITEMS: usize = 50;
pub(super) const DATE_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
const SESSION_MAX_AGE_DAYS: i64 = 180;

const CHAT_FIELDS: &[&str] = &[
    "start_date_time",
    "name",
    "phone",
    "email",
    "status",
    "initiator",
    "visitor_session_id",
    "campaign_id",
    "source_id",
    "site_id",
    "messages",
    "ext_id",
];
const CHAT_MESSAGE_FIELDS: &[&str] = &["date_time", "source", "message", "employee_id"];
const OFFLINE_FIELDS: &[&str] = &[
    "date_time",
    "name",
    "phone",
    "email",
    "message",
    "visitor_session_id",
    "campaign_id",
    "site_id",
    "source_id",
    "form_name",
    "ext_id",
    "user_fields",
];

/// Which upload is being checked; they differ in the item key, fields and the `campaign_id = -1` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    Chats,
    OfflineMessages,
}

impl Upload {
    pub fn key(self) -> &'static str {
        match self {
            Upload::Chats => "chats",
            Upload::OfflineMessages => "offline_messages",
        }
    }
}

/// Checks the `params` of an upload; returns the items to store.
pub fn upload(
    kind: Upload,
    params: &Map<String, Value>,
    account: &Account,
    now_local: NaiveDateTime,
) -> Result<Vec<Map<String, Value>>, RpcError> {
    let key = kind.key();
    if let Some(unexpected) = params.keys().find(|k| !["access_token", key, "user_id"].contains(&k.as_str())) {
        return Err(
            RpcError::new("unexpected_parameters", format!("Unexpected parameter {unexpected}")).at(unexpected.clone())
        );
    }
    let items = params.get(key).ok_or_else(|| RpcError::missing(key))?;
    let items =
        items.as_array().ok_or_else(|| RpcError::new("data_type_error", format!("{key} must be an array")).at(key))?;
    if items.is_empty() {
        return Err(RpcError::missing(key));
    }
    if items.len() > MAX_ITEMS {
        return Err(RpcError::new("data_limit_exceeded", format!("At most {MAX_ITEMS} items per request")).at(key));
    }
    let check = Check { account, now_local };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let prefix = format!("{key}.{i}");
            let item = item
                .as_object()
                .ok_or_else(|| RpcError::new("data_type_error", "item must be an object").at(&prefix))?;
            match kind {
                Upload::Chats => check.chat(&prefix, item)?,
                Upload::OfflineMessages => check.offline(&prefix, item)?,
            }
            Ok(item.clone())
        })
        .collect()
}

struct Check<'a> {
    account: &'a Account,
    now_local: NaiveDateTime,
}

impl Check<'_> {
    fn chat(&self, prefix: &str, item: &Map<String, Value>) -> Result<(), RpcError> {
        only_fields(prefix, item, CHAT_FIELDS)?;
        let start = self.date_time(prefix, item, "start_date_time")?;
        one_of(prefix, item, &["status"], &["lost", "succeed", "refused"], true)?;
        one_of(prefix, item, &["initiator"], &["operator", "visitor", "autoinvite"], false)?;
        contact(prefix, item)?;
        self.attribution(prefix, item, start, false)?;
        let messages = item
            .get("messages")
            .ok_or_else(|| RpcError::missing(format!("{prefix}.messages")))?
            .as_array()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                RpcError::invalid_value(format!("{prefix}.messages"), "messages must be a non-empty array")
            })?;
        for (j, m) in messages.iter().enumerate() {
            let mp = format!("{prefix}.messages.{j}");
            let m =
                m.as_object().ok_or_else(|| RpcError::new("data_type_error", "message must be an object").at(&mp))?;
            only_fields(&mp, m, CHAT_MESSAGE_FIELDS)?;
            self.date_time(&mp, m, "date_time")?;
            let source = one_of(&mp, m, &["source"], &["operator", "visitor", "system"], true)?;
            string(&mp, m, "message", true)?;
            match (source, m.get("employee_id")) {
                (Some("operator"), None | Some(Value::Null)) => {
                    return Err(RpcError::missing(format!("{mp}.employee_id")))
                }
                (_, Some(id)) => {
                    let id = number(&format!("{mp}.employee_id"), id)?;
                    if !self.account.employees.iter().any(|e| e.id == id) {
                        return Err(RpcError::not_found(format!("{mp}.employee_id")));
                    }
                }
                _ => {}
            }
        }
        if let Some(ext_id) = item.get("ext_id") {
            ext_id.as_str().ok_or_else(|| {
                RpcError::new("data_type_error", "ext_id must be a string").at(format!("{prefix}.ext_id"))
            })?;
        }
        Ok(())
    }

    fn offline(&self, prefix: &str, item: &Map<String, Value>) -> Result<(), RpcError> {
        only_fields(prefix, item, OFFLINE_FIELDS)?;
        let at = self.date_time(prefix, item, "date_time")?;
        contact(prefix, item)?;
        self.attribution(prefix, item, at, true)?;
        string(prefix, item, "message", false)?;
        string(prefix, item, "form_name", false)?;
        Ok(())
    }

    fn date_time(&self, prefix: &str, item: &Map<String, Value>, key: &str) -> Result<NaiveDateTime, RpcError> {
        let field = format!("{prefix}.{key}");
        let raw = item.get(key).and_then(Value::as_str).ok_or_else(|| RpcError::missing(&field))?;
        let t = NaiveDateTime::parse_from_str(raw, DATE_FORMAT).ok().filter(|_| raw.len() == 19).ok_or_else(|| {
            RpcError::new("invalid_date_time", format!("{raw} is not YYYY-MM-DD hh:mm:ss")).at(&field)
        })?;
        // A second of slack for the clock of the machine that built the item.
        if t > self.now_local + Duration::seconds(1) {
            return Err(RpcError::new("invalid_date_time", format!("{raw} is in the future")).at(&field));
        }
        Ok(t)
    }

    /// One of session / campaign / site, and they must agree when several are given.
    fn attribution(
        &self,
        prefix: &str,
        item: &Map<String, Value>,
        at: NaiveDateTime,
        minus_one_campaign_allowed: bool,
    ) -> Result<(), RpcError> {
        let get = |k: &str| item.get(k).filter(|v| !v.is_null());
        let session =
            get("visitor_session_id").map(|v| number(&format!("{prefix}.visitor_session_id"), v)).transpose()?;
        let campaign = get("campaign_id").map(|v| signed(&format!("{prefix}.campaign_id"), v)).transpose()?;
        let site = get("site_id").map(|v| number(&format!("{prefix}.site_id"), v)).transpose()?;
        let source = get("source_id").map(|v| number(&format!("{prefix}.source_id"), v)).transpose()?;
        if session.is_none() && campaign.is_none() && site.is_none() {
            return Err(RpcError::missing(format!("{prefix}.visitor_session_id")));
        }
        if let Some(id) = session {
            let field = format!("{prefix}.visitor_session_id");
            let known = self.account.sessions.iter().find(|s| s.id == id).ok_or_else(|| RpcError::not_found(&field))?;
            let started =
                NaiveDateTime::parse_from_str(&known.started_at, DATE_FORMAT).expect("sandbox config times are valid");
            if started > at {
                return Err(RpcError::invalid_value(field, "the session started after the chat"));
            }
            if at - started > Duration::days(SESSION_MAX_AGE_DAYS) {
                return Err(RpcError::invalid_value(field, "the session is older than 180 days"));
            }
        }
        let mut campaign_site = None;
        match campaign {
            // Offline requests may say "no campaign" with -1, but then must name the site.
            Some(-1) if minus_one_campaign_allowed && site.is_none() => {
                return Err(RpcError::missing(format!("{prefix}.site_id")));
            }
            Some(-1) if minus_one_campaign_allowed => {}
            Some(id) => {
                let field = format!("{prefix}.campaign_id");
                let c = u64::try_from(id)
                    .ok()
                    .and_then(|id| self.account.campaigns.iter().find(|c| c.id == id))
                    .ok_or_else(|| {
                        if id == -1 {
                            RpcError::invalid_value(&field, "campaign_id -1 is not allowed for chats")
                        } else {
                            RpcError::not_found(&field)
                        }
                    })?;
                if c.status != "active" {
                    return Err(
                        RpcError::new("campaign_is_inactive", format!("Campaign {} is inactive", c.id)).at(field)
                    );
                }
                campaign_site = c.site_id;
            }
            None => {}
        }
        if let Some(id) = site {
            if !self.account.sites.iter().any(|s| s.id == id) {
                return Err(RpcError::not_found(format!("{prefix}.site_id")));
            }
            if campaign_site.is_some_and(|cs| cs != id) {
                return Err(RpcError::new("invalid_parameters_combination", "campaign_id and site_id disagree")
                    .at(format!("{prefix}.site_id")));
            }
        }
        if let Some(id) = source {
            if !self.account.sources.iter().any(|s| s.id == id) {
                return Err(RpcError::not_found(format!("{prefix}.source_id")));
            }
        }
        Ok(())
    }
}

fn only_fields(prefix: &str, item: &Map<String, Value>, allowed: &[&str]) -> Result<(), RpcError> {
    match item.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => {
            Err(RpcError::new("unexpected_parameters", format!("Unexpected parameter {k}")).at(format!("{prefix}.{k}")))
        }
        None => Ok(()),
    }
}

fn one_of<'a>(
    prefix: &str,
    item: &'a Map<String, Value>,
    key: &[&str; 1],
    allowed: &[&str],
    required: bool,
) -> Result<Option<&'a str>, RpcError> {
    let field = format!("{prefix}.{}", key[0]);
    match item.get(key[0]) {
        None | Some(Value::Null) if required => Err(RpcError::missing(field)),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(Some(s)),
        Some(other) => Err(RpcError::invalid_value(field, format!("{other} is not one of {}", allowed.join(", ")))),
    }
}

fn string(prefix: &str, item: &Map<String, Value>, key: &str, required: bool) -> Result<(), RpcError> {
    match item.get(key) {
        None | Some(Value::Null) if required => Err(RpcError::missing(format!("{prefix}.{key}"))),
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(_) => {
            Err(RpcError::new("data_type_error", format!("{key} must be a string")).at(format!("{prefix}.{key}")))
        }
    }
}

fn contact(prefix: &str, item: &Map<String, Value>) -> Result<(), RpcError> {
    string(prefix, item, "name", false)?;
    string(prefix, item, "email", false)?;
    let phone = item.get("phone").filter(|v| !v.is_null());
    let email = item.get("email").filter(|v| !v.is_null());
    if phone.is_none() && email.is_none() {
        return Err(RpcError::missing(format!("{prefix}.phone")));
    }
    if let Some(phone) = phone {
        let ok = phone.as_str().is_some_and(|p| (10..=15).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            return Err(RpcError::invalid_value(format!("{prefix}.phone"), "phone must be E.164 digits"));
        }
    }
    if let Some(email) = email.and_then(Value::as_str) {
        if !email.contains('@') {
            return Err(RpcError::invalid_value(format!("{prefix}.email"), "not an e-mail address"));
        }
    }
    Ok(())
}

fn number(field: &str, v: &Value) -> Result<u64, RpcError> {
    v.as_u64().ok_or_else(|| RpcError::new("data_type_error", format!("{field} must be a number")).at(field))
}

fn signed(field: &str, v: &Value) -> Result<i64, RpcError> {
    v.as_i64().ok_or_else(|| RpcError::new("data_type_error", format!("{field} must be a number")).at(field))
}
