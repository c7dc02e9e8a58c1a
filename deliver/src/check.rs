//! `deliver check`: each integration against its CoMagic account, the way the settings page would
//! check it, with one line per problem saying what to change. `deliver check --list` prints what
//! the account holds, to fill the integration from.

use std::time::Duration;

use bridge_shared::comagic::mnemonics::fix_for;
use bridge_shared::comagic::{outcome, ComagicClient, Failure};
use bridge_shared::integrations::{Integration, Target};
use bridge_shared::secret::Secret;
use bridge_shared::telemetry::ComagicMetrics;
use serde_json::{json, Map, Value};

use crate::table::table;

const TIMEOUT: Duration = Duration::from_secs(20);

pub fn client() -> ComagicClient {
    ComagicClient::new(TIMEOUT, ComagicMetrics::new(&prometheus::Registry::new()))
}

/// What reads a CoMagic account: the integration's API address and token (or a form's, before
/// it is saved).
#[derive(Clone, Copy)]
pub struct AccountKey<'a> {
    pub api: &'a str,
    pub token: &'a Secret,
}

impl<'a> From<&'a Integration> for AccountKey<'a> {
    fn from(integration: &'a Integration) -> Self {
        AccountKey { api: &integration.comagic_api, token: &integration.comagic_token }
    }
}

/// What the account holds that an integration refers to.
struct Account {
    timezone: String,
    employees: Vec<Value>,
    campaigns: Vec<Value>,
    sites: Vec<Value>,
    sources: Vec<Value>,
}

/// Why the account could not be read at all: the one problem to report.
fn account_unreadable(label: &str, key: AccountKey<'_>, failure: Failure) -> String {
    let fix = match &failure {
        Failure::Tenant { mnemonic, .. } => fix_for(mnemonic).map(str::to_owned),
        Failure::Quota { .. } => Some("the account's API points are spent for now: run the check again later".into()),
        Failure::Transient { label, reason } => {
            // The transport's own words ("connection refused", a resolver's error) describe the
            // network the console sits in: the log has them, the answer only the class.
            // Nor is the address said: a tenant reads this, and comagic_api is the operator's.
            let reason = bridge_shared::redact::for_operators(reason, 500);
            tracing::info!(api = key.api, %reason, "CoMagic did not answer the account check");
            Some(format!("the CoMagic address {} (check comagic_api; the log says more)", no_answer(label)))
        }
        _ => None,
    };
    let fix = fix.unwrap_or_else(|| {
        format!("CoMagic refused get.account ({}): check comagic_api and comagic_token", failure.label())
    });
    format!("{label}: {fix}")
}

/// What a transient failure of class `label` says about the address, in words that tell nothing
/// of the network between.
fn no_answer(label: &str) -> &'static str {
    match label {
        outcome::CONNECT_FAILED | "transport" => "did not answer",
        "http_5xx" => "answered with a server error",
        _ => "did not answer as CoMagic's Data API does",
    }
}

async fn call(
    client: &ComagicClient,
    key: AccountKey<'_>,
    method: &'static str,
    params: Value,
) -> Result<Value, Failure> {
    let params: Map<String, Value> = params.as_object().cloned().unwrap_or_default();
    let success = client.call(key.api, key.token, method, params, None).await?;
    Ok(success.result.get("data").cloned().unwrap_or(Value::Null))
}

async fn list(client: &ComagicClient, key: AccountKey<'_>, method: &'static str) -> Result<Vec<Value>, Failure> {
    let data = call(client, key, method, json!({"limit": 10_000})).await?;
    Ok(data.as_array().cloned().unwrap_or_default())
}

async fn read_account(client: &ComagicClient, key: AccountKey<'_>) -> Result<Account, Failure> {
    let account = call(client, key, "get.account", json!({})).await?;
    let timezone = account
        .as_array()
        .and_then(|a| a.first())
        .and_then(|a| a.get("timezone"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok(Account {
        timezone,
        employees: list(client, key, "get.employees").await?,
        campaigns: list(client, key, "get.campaigns").await?,
        sites: list(client, key, "get.sites").await?,
        sources: list(client, key, "get.sources").await?,
    })
}

fn find(items: &[Value], id: u64) -> Option<&Value> {
    items.iter().find(|i| i.get("id").and_then(Value::as_u64) == Some(id))
}

/// The longest name a problem quotes, in characters: the account's names are CoMagic's strings.
const NAME_MAX: usize = 100;
/// The most choices a problem lists (the pick-lists have them all).
const CHOICES_MAX: usize = 20;

fn name(item: &Value, key: &str) -> String {
    item.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// A name as a problem quotes it: at most [`NAME_MAX`] characters (the pick-lists have it whole).
fn quoted_name(item: &Value, key: &str) -> String {
    bridge_shared::redact::cut(&name(item, key), NAME_MAX)
}

/// `101 (Olga Operator), 102 (...)`: what the operator can pick from, the first [`CHOICES_MAX`].
fn choices(items: &[Value], key: &str, keep: impl Fn(&Value) -> bool) -> String {
    let mut listed = items
        .iter()
        .filter(|i| keep(i))
        .filter_map(|i| Some(format!("{} ({})", i.get("id")?.as_u64()?, quoted_name(i, key))));
    let first: Vec<String> = listed.by_ref().take(CHOICES_MAX).collect();
    let more = listed.count();
    match (first.is_empty(), more) {
        (true, _) => "none in the account".into(),
        (false, 0) => first.join(", "),
        (false, more) => format!("{} and {more} more (the form's list has them all)", first.join(", ")),
    }
}

fn may_chat(employee: &Value) -> bool {
    employee.pointer(MAY_CHAT).and_then(Value::as_bool) == Some(true)
}

const MAY_CHAT: &str = "/operator/operator_chat_enabled";

fn active(campaign: &Value) -> bool {
    campaign.get("status").and_then(Value::as_str) == Some("active")
}

/// An upload component is on when an empty upload is refused for anything but the component.
async fn component_problem(
    client: &ComagicClient,
    integration: &Integration,
    method: &'static str,
    key: &str,
) -> Option<String> {
    match call(client, integration.into(), method, json!({ key: [] })).await {
        Err(Failure::Tenant { mnemonic: "method_component_disabled", .. }) => {
            let component = method.replace('.', "_");
            Some(format!(
                "{}: the account's component {component} is off, so {method} is refused: turn it on in the \
                 CoMagic account (or ask the account manager)",
                integration.id
            ))
        }
        _ => None,
    }
}

/// Every problem of one integration, one line each; empty when it is ready.
pub async fn check(client: &ComagicClient, integration: &Integration) -> Vec<String> {
    let key = AccountKey::from(integration);
    let account = match read_account(client, key).await {
        Ok(account) => account,
        Err(failure) => return vec![account_unreadable(&integration.id, key, failure)],
    };
    let id = &integration.id;
    let mut problems = Vec::new();
    if account.timezone != integration.timezone.name() {
        problems.push(format!(
            "{id}: the account's time zone is {} but timezone = \"{}\": set timezone = \"{}\" (chat times would be off)",
            account.timezone,
            integration.timezone.name(),
            account.timezone
        ));
    }
    problems.extend(component_problem(client, integration, "upload.chats", "chats").await);
    if integration.offline_enabled {
        problems.extend(component_problem(client, integration, "upload.offline_messages", "offline_messages").await);
    }
    match find(&account.employees, integration.employee_id) {
        None => problems.push(format!(
            "{id}: employee_id = {} is not an employee of the account: set it to one of {}",
            integration.employee_id,
            choices(&account.employees, "full_name", |_| true)
        )),
        Some(e) if !may_chat(e) => {
            problems.push(format!(
                "{id}: employee {} ({}) may not take chats: enable chats for them in CoMagic or set employee_id to one of {}",
                integration.employee_id,
                quoted_name(e, "full_name"),
                choices(&account.employees, "full_name", may_chat)
            ))
        }
        Some(_) => {}
    }
    let targets = std::iter::once(("default".to_owned(), integration.default))
        .chain(integration.messengers.iter().map(|(channel, t)| (format!("messengers.{channel}"), *t)));
    for (setting, target) in targets {
        problems.extend(target_problems(id, &setting, target, &account));
    }
    problems
}

fn target_problems(id: &str, setting: &str, target: Target, account: &Account) -> Vec<String> {
    let mut problems = Vec::new();
    match target {
        Target::Campaign { campaign_id } => match find(&account.campaigns, campaign_id) {
            None => problems.push(format!(
                "{id}: {setting} campaign {campaign_id} does not exist: use one of the active campaigns {}",
                choices(&account.campaigns, "name", active)
            )),
            Some(c) if !active(c) => problems.push(format!(
                "{id}: {setting} campaign {campaign_id} ({}) is inactive: activate it in CoMagic or use one of {}",
                quoted_name(c, "name"),
                choices(&account.campaigns, "name", active)
            )),
            Some(_) => {}
        },
        Target::SiteSource { site_id, source_id } => {
            if find(&account.sites, site_id).is_none() {
                problems.push(format!(
                    "{id}: {setting} site {site_id} does not exist: use one of {}",
                    choices(&account.sites, "domain_name", |_| true)
                ));
            }
            if find(&account.sources, source_id).is_none() {
                problems.push(format!(
                    "{id}: {setting} source {source_id} does not exist: use one of {}",
                    choices(&account.sources, "name", |_| true)
                ));
            }
        }
    }
    problems
}

/// The account's employees, campaigns, sites and sources, as tables.
pub async fn listing(client: &ComagicClient, integration: &Integration) -> Result<String, String> {
    let key = AccountKey::from(integration);
    let account = read_account(client, key).await.map_err(|f| account_unreadable(&integration.id, key, f))?;
    let cell = |v: &Value, pointer: &str| match v.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    };
    let section = |title: &str, items: &[Value], columns: &[(&str, &str)]| {
        let rows: Vec<Vec<String>> =
            items.iter().map(|i| columns.iter().map(|(_, pointer)| cell(i, pointer)).collect()).collect();
        let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
        format!("{title}\n{}\n", table(&header, &rows))
    };
    Ok(format!("Account time zone: {}\n\n", account.timezone)
        + &section(
            "Employees (employee_id)",
            &account.employees,
            &[("ID", "/id"), ("NAME", "/full_name"), ("MAY CHAT", MAY_CHAT)],
        )
        + &section(
            "Campaigns (campaign_id)",
            &account.campaigns,
            &[("ID", "/id"), ("NAME", "/name"), ("STATUS", "/status"), ("SITE", "/site_id")],
        )
        + &section("Sites (site_id)", &account.sites, &[("ID", "/id"), ("DOMAIN", "/domain_name")])
        + &section("Sources (source_id)", &account.sources, &[("ID", "/id"), ("NAME", "/name")]))
}

/// What a settings form may pick from: employees who may take chats, active campaigns, sites and
/// sources, as `{id, name}`; and the account's time zone. An unreadable account is the one
/// problem, with its fix.
pub async fn pick_lists(client: &ComagicClient, key: AccountKey<'_>) -> Result<Value, String> {
    let account = read_account(client, key).await.map_err(|f| account_unreadable("the account", key, f))?;
    let pick = |items: &[Value], name_key: &str, keep: &dyn Fn(&Value) -> bool| -> Vec<Value> {
        items.iter().filter(|i| keep(i)).map(|i| json!({"id": i.get("id"), "name": name(i, name_key)})).collect()
    };
    Ok(json!({
        "timezone": account.timezone,
        "employees": pick(&account.employees, "full_name", &may_chat),
        "campaigns": pick(&account.campaigns, "name", &active),
        "sites": pick(&account.sites, "domain_name", &|_| true),
        "sources": pick(&account.sources, "name", &|_| true),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_quotes_the_first_choices_and_short_names_of_an_account_of_any_size() {
        let long = "N".repeat(10_000);
        let employees: Vec<Value> = (1..=25).map(|id| json!({"id": id, "full_name": long})).collect();
        let listed = choices(&employees, "full_name", |_| true);
        assert!(listed.starts_with(&format!("1 ({}…), 2 (", "N".repeat(NAME_MAX))), "{}", &listed[..120]);
        assert!(listed.ends_with("and 5 more (the form's list has them all)"), "{listed}");
        assert!(listed.len() < CHOICES_MAX * (NAME_MAX + 20) + 100, "{} bytes", listed.len());
        assert_eq!(choices(&employees, "full_name", |_| false), "none in the account");
    }
}
