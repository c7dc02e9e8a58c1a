use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

/// Alive while every essential task runs; 503 names the ones that ended, so an orchestrator
/// restarts a process that would otherwise stay up and do nothing.
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    match state.liveness.health() {
        (true, body) => HttpResponse::Ok().json(body),
        (false, body) => HttpResponse::ServiceUnavailable().json(body),
    }
}

/// Ready while an event can be made durable: the broker is connected, or the spool is writable.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.sink.readiness() {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready", "broker": state.sink.link.node()})),
        Err(reason) => HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable", "reason": reason})),
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(bridge_shared::telemetry::METRICS_CONTENT_TYPE)
        .body(bridge_shared::telemetry::render(&state.registry))
}

pub async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": "not_found", "message": "no such endpoint"}))
}
