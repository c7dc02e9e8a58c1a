//! The CoMagic sandbox: a real HTTP JSON-RPC server that enforces the documented contract of the
//! Data API methods verbox-bridge uses, counts points per window with `metadata.limits`, injects
//! scripted faults, and records every call and every stored item (served under `/__sandbox/`).

mod admin;
pub mod config;
mod faults;
mod report;
pub mod rpc;
pub mod validate;
mod windows;

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use chrono::{NaiveDateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use config::{Account, SandboxConfig};
use faults::{take_faults, Faulted};
pub use faults::{Fault, FaultKind};
use rpc::RpcError;
pub use validate::Upload;
use windows::Window;
pub use windows::Windows;

/// One call as the sandbox saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub method: String,
    pub account: Option<String>,
    pub items: usize,
    /// `ok`, the error mnemonic, `http_500`, `hang` or `answer_lost` (carried out, answer lost).
    pub result: String,
}

struct AccountState {
    config: Account,
    tz: Tz,
    minute: Window,
    day: Window,
    /// What was stored, when, and the item.
    stored: Vec<(Upload, Instant, Map<String, Value>)>,
    ext_ids: HashSet<(&'static str, String)>,
}

#[derive(Default)]
struct State {
    accounts: Vec<AccountState>,
    calls: Vec<CallRecord>,
    faults: Vec<Fault>,
    next_item_id: u64,
    windows: Windows,
}

type Shared = Arc<Mutex<State>>;

/// A clone is another handle on the same server (e.g. for a task that samples it).
#[derive(Clone)]
pub struct Sandbox {
    url: String,
    state: Shared,
    server: actix_web::dev::ServerHandle,
}

impl Sandbox {
    /// Starts on 127.0.0.1 with an OS-chosen port.
    pub async fn start(config: SandboxConfig) -> std::io::Result<Sandbox> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    pub async fn start_on(config: SandboxConfig, address: &str) -> std::io::Result<Sandbox> {
        let state: Shared = Arc::new(Mutex::new(State::default()));
        for account in config.account {
            add_account(&mut state.lock().unwrap(), account)?;
        }
        let listener = TcpListener::bind(address)?;
        let url = format!("http://{}/v2.0", listener.local_addr()?);
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(16 << 20))
                .route("/v2.0", web::post().to(rpc_endpoint))
                .route("/__sandbox/calls", web::get().to(admin::list_calls))
                .route("/metrics", web::get().to(admin::metrics))
                .route("/__sandbox/faults", web::post().to(admin::add_fault))
                .route("/__sandbox/faults", web::delete().to(admin::clear_faults))
                .route("/__sandbox/accounts/{name}", web::patch().to(admin::patch_account))
                .route("/__sandbox/accounts/{name}/{upload}", web::get().to(admin::list_items))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Sandbox { url, state, server: handle })
    }

    /// The Data API endpoint, to put in an integration's `comagic_api`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn set_windows(&self, windows: Windows) {
        self.state.lock().unwrap().windows = windows;
    }

    pub fn calls(&self) -> Vec<CallRecord> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Items stored for an account, in the order they were accepted.
    pub fn stored(&self, account: &str, upload: Upload) -> Vec<Map<String, Value>> {
        let state = self.state.lock().unwrap();
        state
            .accounts
            .iter()
            .filter(|a| a.config.name == account)
            .flat_map(|a| a.stored.iter().filter(|(u, _, _)| *u == upload).map(|(_, _, item)| item.clone()))
            .collect()
    }

    /// When each item of an account carrying an `ext_id` was stored, in the order they were accepted.
    pub fn stored_times(&self, account: &str, upload: Upload) -> Vec<(String, Instant)> {
        let state = self.state.lock().unwrap();
        let items = state.accounts.iter().filter(|a| a.config.name == account).flat_map(|a| a.stored.iter());
        items
            .filter(|(u, _, _)| *u == upload)
            .filter_map(|(_, at, item)| Some((item.get("ext_id")?.as_str()?.to_owned(), *at)))
            .collect()
    }

    /// Items stored in every account, a cheap count to sample often.
    pub fn stored_total(&self) -> usize {
        self.state.lock().unwrap().accounts.iter().map(|a| a.stored.len()).sum()
    }

    pub fn add_fault(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    pub fn update_account(&self, name: &str, change: impl FnOnce(&mut Account)) {
        let mut state = self.state.lock().unwrap();
        let account = state.accounts.iter_mut().find(|a| a.config.name == name).expect("a configured account");
        change(&mut account.config);
    }

    pub async fn stop(self) {
        self.server.stop(false).await;
    }
}

fn add_account(state: &mut State, account: Account) -> std::io::Result<()> {
    let tz: Tz = account.timezone.parse().map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("account {}: bad time zone", account.name))
    })?;
    state.accounts.push(AccountState {
        config: account,
        tz,
        minute: Window::new(),
        day: Window::new(),
        stored: Vec::new(),
        ext_ids: HashSet::new(),
    });
    Ok(())
}

async fn rpc_endpoint(state: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return HttpResponse::Ok().json(RpcError::new("parse_error", e.to_string()).to_json(&Value::Null)),
    };
    let Some(request) = request.as_object() else {
        return HttpResponse::Ok().json(
            RpcError::new("notifications_not_supported", "Batch requests are not supported").to_json(&Value::Null),
        );
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let method = request.get("method").and_then(Value::as_str).unwrap_or("").to_owned();
    let params = request.get("params").and_then(Value::as_object).cloned().unwrap_or_default();
    let token = params.get("access_token").and_then(Value::as_str).unwrap_or("").to_owned();
    let account = {
        let state = state.lock().unwrap();
        state.accounts.iter().find(|a| a.config.token == token).map(|a| a.config.name.clone())
    };
    let (latency, faulted) = take_faults(&state, account.as_deref());
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let items = params.values().filter_map(Value::as_array).map(Vec::len).max().unwrap_or(0);
    let record = |result: &str| {
        state.lock().unwrap().calls.push(CallRecord {
            method: method.clone(),
            account: account.clone(),
            items,
            result: result.into(),
        });
    };
    let outcome = match faulted {
        Faulted::Respond(response, label) => {
            record(label);
            if label == "hang" {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            return response;
        }
        Faulted::Error(e) => Err(e),
        Faulted::LoseAnswer(after) => {
            let outcome = well_formed(request, &id, &method)
                .and_then(|()| handle_call(&mut state.lock().unwrap(), &method, &params));
            record(if outcome.is_ok() { "answer_lost" } else { "answer_lost_error" });
            tokio::time::sleep(after).await;
            return HttpResponse::BadGateway().body("injected: the answer was lost");
        }
        Faulted::StoreLate(after) => {
            record("stored_late");
            // On a task of its own: actix drops the handler when the client hangs up.
            let (state, request, id, method) = (state.clone(), request.clone(), id.clone(), method.clone());
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = well_formed(&request, &id, &method)
                    .and_then(|()| handle_call(&mut state.lock().unwrap(), &method, &params));
            });
            tokio::time::sleep(after).await;
            return HttpResponse::GatewayTimeout().body("injected: the call was carried out late");
        }
        Faulted::None => {
            well_formed(request, &id, &method).and_then(|()| handle_call(&mut state.lock().unwrap(), &method, &params))
        }
    };
    match outcome {
        Ok(result) => {
            record("ok");
            HttpResponse::Ok().json(json!({"jsonrpc": "2.0", "id": id, "result": result}))
        }
        Err(e) => {
            record(e.mnemonic);
            HttpResponse::Ok().json(e.to_json(&id))
        }
    }
}

/// The JSON-RPC envelope's own rules, before the method's.
fn well_formed(request: &Map<String, Value>, id: &Value, method: &str) -> Result<(), RpcError> {
    if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0")
        || method.is_empty()
        || request.get("params").is_some_and(|p| !p.is_object())
    {
        Err(RpcError::new("invalid_request", "Not a JSON-RPC 2.0 request"))
    } else if id.is_null() {
        Err(RpcError::new("notifications_not_supported", "Notifications are not supported"))
    } else {
        Ok(())
    }
}

fn handle_call(state: &mut State, method: &str, params: &Map<String, Value>) -> Result<Value, RpcError> {
    let token = params.get("access_token").and_then(Value::as_str).ok_or_else(|| RpcError::missing("access_token"))?;
    let windows = state.windows;
    let next_item_id = &mut state.next_item_id;
    let account = state
        .accounts
        .iter_mut()
        .find(|a| a.config.token == token)
        .ok_or_else(|| RpcError::new("access_token_invalid", "Access token is invalid"))?;
    if !account.config.ip_whitelisted {
        return Err(RpcError::new("ip_not_whitelisted", "IP address is not in the white list"));
    }
    if !account.config.active {
        return Err(RpcError::new("account_inactive", "Account is inactive"));
    }
    let (day_remaining, day_reset) = account.day.remaining(account.config.day_limit, windows.day);
    let (minute_remaining, minute_reset) = account.minute.remaining(account.config.minute_limit, windows.minute);
    if day_remaining == 0 {
        return Err(RpcError::new("limit_exceeded", "Limit per day has been exceeded"));
    }
    if minute_remaining == 0 {
        return Err(RpcError::new("limit_exceeded", "Limit per minute has been exceeded"));
    }
    let now_local: NaiveDateTime = Utc::now().with_timezone(&account.tz).naive_local();
    let data = match method {
        "upload.chats" => upload(account, Upload::Chats, "upload_chats", params, now_local, next_item_id)?,
        "upload.offline_messages" => {
            upload(account, Upload::OfflineMessages, "upload_offline_messages", params, now_local, next_item_id)?
        }
        "get.chats_report" => report::report(account, Upload::Chats, params)?,
        "get.offline_messages_report" => report::report(account, Upload::OfflineMessages, params)?,
        "get.account" => json!([{"app_id": 1, "name": account.config.name, "timezone": account.config.timezone}]),
        "get.employees" => json!(account
            .config
            .employees
            .iter()
            .map(|e| json!({
                "id": e.id, "full_name": e.full_name, "operator": {"operator_chat_enabled": e.chat_enabled}
            }))
            .collect::<Vec<_>>()),
        "get.campaigns" => json!(account
            .config
            .campaigns
            .iter()
            .map(|c| json!({
                "id": c.id, "name": c.name, "status": c.status, "type": "basic", "site_id": c.site_id
            }))
            .collect::<Vec<_>>()),
        "get.sites" => json!(account
            .config
            .sites
            .iter()
            .map(|s| json!({"id": s.id, "domain_name": s.domain_name, "site_key": format!("key{}", s.id)}))
            .collect::<Vec<_>>()),
        "get.sources" => json!(account
            .config
            .sources
            .iter()
            .map(|s| json!({"id": s.id, "name": s.name, "state": "active"}))
            .collect::<Vec<_>>()),
        other => return Err(RpcError::new("method_not_found", format!("Method {other} not found"))),
    };
    // Only successful requests are charged, one point each.
    account.minute.used += 1;
    account.day.used += 1;
    let limits = json!({
        "day_limit": account.config.day_limit, "day_remaining": day_remaining - 1, "day_reset": day_reset,
        "minute_limit": account.config.minute_limit, "minute_remaining": minute_remaining - 1, "minute_reset": minute_reset,
    });
    Ok(json!({"data": data, "metadata": {"limits": limits}}))
}

fn upload(
    account: &mut AccountState,
    kind: Upload,
    component: &str,
    params: &Map<String, Value>,
    now_local: NaiveDateTime,
    next_item_id: &mut u64,
) -> Result<Value, RpcError> {
    if !account.config.components.iter().any(|c| c == component) {
        return Err(RpcError::new("method_component_disabled", format!("Component {component} is disabled")));
    }
    let items = validate::upload(kind, params, &account.config, now_local)?;
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(ext_id) = item.get("ext_id").and_then(Value::as_str) {
            let key = (kind.key(), ext_id.to_owned());
            let repeated = account.ext_ids.contains(&key) || !seen.insert(key);
            if repeated && account.config.refuses_repeated_ext_id {
                return Err(
                    RpcError::new("duplicate_entity", "Entity already exists").at(format!("{}.{i}.ext_id", kind.key()))
                );
            }
        }
    }
    let mut ids = Vec::with_capacity(items.len());
    for mut item in items {
        *next_item_id += 1;
        item.insert("id".into(), json!(*next_item_id));
        if let Some(ext_id) = item.get("ext_id").and_then(Value::as_str) {
            account.ext_ids.insert((kind.key(), ext_id.to_owned()));
        }
        ids.push(json!({"id": *next_item_id}));
        account.stored.push((kind, Instant::now(), item));
    }
    Ok(Value::Array(ids))
}
