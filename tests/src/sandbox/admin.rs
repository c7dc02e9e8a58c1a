//! The sandbox's own endpoints for tests and demos (`/__sandbox/*`, `/metrics`): what was called and
//! stored, scripted faults, account changes.

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

use super::faults::Fault;
use super::{Account, Shared, Upload};

/// Prometheus text: calls answered by method, account and result, and items stored, so a demo's
/// dashboard shows the far side too.
pub(super) async fn metrics(state: web::Data<Shared>) -> HttpResponse {
    let registry = prometheus::Registry::new();
    let opts = |name: &str, help: &str| prometheus::Opts::new(name, help);
    let calls = prometheus::IntCounterVec::new(
        opts("comagic_sandbox_requests_total", "Data API calls the sandbox answered"),
        &["method", "account", "result"],
    )
    .expect("valid metric");
    let items = prometheus::IntCounterVec::new(
        opts("comagic_sandbox_items_total", "Items in upload calls the sandbox accepted"),
        &["method", "account"],
    )
    .expect("valid metric");
    for c in state.lock().unwrap().calls.iter() {
        let account = c.account.as_deref().unwrap_or("unknown");
        calls.with_label_values(&[c.method.as_str(), account, c.result.as_str()]).inc();
        if c.result == "ok" && c.method.starts_with("upload.") {
            items.with_label_values(&[c.method.as_str(), account]).inc_by(c.items as u64);
        }
    }
    registry.register(Box::new(calls)).expect("registered once");
    registry.register(Box::new(items)).expect("registered once");
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(bridge_shared::telemetry::render(&registry))
}

pub(super) async fn list_calls(state: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(&state.lock().unwrap().calls)
}

pub(super) async fn list_items(state: web::Data<Shared>, path: web::Path<(String, String)>) -> HttpResponse {
    let (name, upload) = path.into_inner();
    let upload = match upload.as_str() {
        "chats" => Upload::Chats,
        "offline_messages" => Upload::OfflineMessages,
        _ => return HttpResponse::NotFound().json(json!({"error": "use chats or offline_messages"})),
    };
    let state = state.lock().unwrap();
    let items: Vec<_> = state
        .accounts
        .iter()
        .filter(|a| a.config.name == name)
        .flat_map(|a| a.stored.iter().filter(|(u, _, _)| *u == upload).map(|(_, _, i)| i))
        .collect();
    HttpResponse::Ok().json(items)
}

pub(super) async fn add_fault(state: web::Data<Shared>, fault: web::Json<Fault>) -> HttpResponse {
    state.lock().unwrap().faults.push(fault.into_inner());
    HttpResponse::NoContent().finish()
}

pub(super) async fn clear_faults(state: web::Data<Shared>) -> HttpResponse {
    state.lock().unwrap().faults.clear();
    HttpResponse::NoContent().finish()
}

/// Merges a JSON object into an account's settings, e.g. `{"ip_whitelisted": true}`.
pub(super) async fn patch_account(
    state: web::Data<Shared>,
    name: web::Path<String>,
    patch: web::Json<Map<String, Value>>,
) -> HttpResponse {
    let mut state = state.lock().unwrap();
    let Some(account) = state.accounts.iter_mut().find(|a| a.config.name == *name) else {
        return HttpResponse::NotFound().json(json!({"error": "no such account"}));
    };
    let mut merged = serde_json::to_value(&account.config).expect("accounts serialize");
    for (k, v) in patch.into_inner() {
        merged[k] = v;
    }
    match serde_json::from_value::<Account>(merged) {
        Ok(updated) if updated.token.is_empty() => {
            HttpResponse::BadRequest().json(json!({"error": "token must not be empty"}))
        }
        Ok(updated) => {
            account.config = updated;
            HttpResponse::NoContent().finish()
        }
        Err(e) => HttpResponse::BadRequest().json(json!({"error": e.to_string()})),
    }
}
