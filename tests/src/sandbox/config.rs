//! The sandbox's accounts: tokens, time zone, components, limits and the lookups an account holds.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    #[serde(default)]
    pub account: Vec<Account>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// How the account is named in recorded calls and `/__sandbox/*` queries (never the token).
    pub name: String,
    pub token: String,
    #[serde(default = "moscow")]
    pub timezone: String,
    #[serde(default = "yes")]
    pub ip_whitelisted: bool,
    #[serde(default = "yes")]
    pub active: bool,
    /// Answer `duplicate_entity` to an `ext_id` already stored. CoMagic's documentation lists the
    /// mnemonic but never says an `ext_id` triggers it: tests of the bridge's own de-duplication
    /// turn this off, and a repeat is stored as a second item.
    #[serde(default = "yes")]
    pub refuses_repeated_ext_id: bool,
    #[serde(default = "all_components")]
    pub components: Vec<String>,
    #[serde(default = "minute_limit")]
    pub minute_limit: u64,
    #[serde(default = "day_limit")]
    pub day_limit: u64,
    #[serde(default)]
    pub employees: Vec<Employee>,
    #[serde(default)]
    pub campaigns: Vec<Campaign>,
    #[serde(default)]
    pub sites: Vec<Site>,
    #[serde(default)]
    pub sources: Vec<Source>,
    /// Visitor sessions the account knows; `started_at` in the account's zone.
    #[serde(default)]
    pub sessions: Vec<Session>,
    /// How long after an upload is stored the reports list it (CoMagic does not document whether
    /// they do at once).
    #[serde(default)]
    pub report_lag_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Employee {
    pub id: u64,
    pub full_name: String,
    #[serde(default = "yes")]
    pub chat_enabled: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub id: u64,
    pub name: String,
    #[serde(default = "active")]
    pub status: String,
    pub site_id: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub id: u64,
    pub domain_name: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub id: u64,
    pub started_at: String,
}

fn yes() -> bool {
    true
}
fn moscow() -> String {
    "Europe/Moscow".into()
}
fn active() -> String {
    "active".into()
}
fn all_components() -> Vec<String> {
    vec!["upload_chats".into(), "upload_offline_messages".into()]
}
fn minute_limit() -> u64 {
    10_000
}
fn day_limit() -> u64 {
    1_000_000
}

impl Account {
    /// A ready account with one employee (101), campaigns 5001 and 5002 (on site 77), sites 77 and 78, sources 12
    /// and 13, and session 900001 started a day ago: what the sample integrations point at.
    pub fn sample(name: &str, token: &str) -> Self {
        Account {
            name: name.into(),
            token: token.into(),
            timezone: moscow(),
            ip_whitelisted: true,
            active: true,
            refuses_repeated_ext_id: true,
            components: all_components(),
            minute_limit: minute_limit(),
            day_limit: day_limit(),
            employees: vec![Employee { id: 101, full_name: "Olga Operator".into(), chat_enabled: true }],
            campaigns: vec![
                Campaign { id: 5001, name: "Site chats".into(), status: active(), site_id: Some(77) },
                Campaign { id: 5002, name: "Telegram".into(), status: active(), site_id: Some(77) },
            ],
            sites: vec![
                Site { id: 77, domain_name: "shop.example".into() },
                Site { id: 78, domain_name: "blog.example".into() },
            ],
            sources: vec![Source { id: 12, name: "Organic".into() }, Source { id: 13, name: "WhatsApp".into() }],
            sessions: vec![Session { id: 900_001, started_at: "2020-01-01 00:00:00".into() }],
            report_lag_ms: 0,
        }
    }
}
