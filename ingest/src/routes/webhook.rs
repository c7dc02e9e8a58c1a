//! `POST /v1/verbox/{integration}/{chat|offline}/{webhook_token}`.

use std::time::Instant;

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bridge_shared::event::{Envelope, EventId, EventKind, ENVELOPE_SCHEMA};
use bridge_shared::integrations::{Integration, Refused};
use bridge_shared::secret::Secret;
use bridge_shared::verbox;
use futures_util::StreamExt;
use serde_json::json;

use crate::error::WebhookError;
use crate::sink::Stored;
use crate::state::AppState;

enum Accepted {
    /// Stored, with the message times that were not kept (out of range), named for the sender.
    Stored(Stored, EventId, Vec<String>),
    Ignored(String),
}

pub async fn webhook(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let (integration_id, kind, token) = path.into_inner();
    let kind = EventKind::parse(&kind);
    let kind_label = kind.map_or("unknown", EventKind::as_str);
    let result = accept(&req, &integration_id, kind, &token, payload, &state).await;
    let (outcome, response) = match result {
        Ok(Accepted::Stored(stored, event_id, times)) => {
            let outcome = match stored {
                Stored::Published => "accepted",
                Stored::Spooled => "spooled",
            };
            tracing::debug!(integration = %integration_id, kind = kind_label, %event_id, outcome, "webhook accepted");
            let mut body = json!({"accepted": true, "event_id": event_id});
            if !times.is_empty() {
                warn_times_out_of_range(&state, &integration_id, &event_id, &times);
                body["times_out_of_range"] = json!(times);
            }
            (outcome, HttpResponse::Ok().json(body))
        }
        Ok(Accepted::Ignored(reason)) => {
            tracing::debug!(integration = %integration_id, kind = kind_label, %reason, "webhook ignored");
            ("ignored", HttpResponse::Accepted().json(json!({"accepted": false, "ignored": reason})))
        }
        Err(error) => {
            // The path holds the token: log the integration id only, never the URL; an id that
            // names no integration is whatever a caller typed, so it is not logged either.
            let current = state.integrations.current();
            let known = current.get(&integration_id).is_some() || current.refused_outright(&integration_id).is_some();
            let integration = if known { integration_id.as_str() } else { "(unknown)" };
            if let Some(refused) = state.refusals.due(integration, Instant::now()) {
                tracing::info!(integration, kind = kind_label, error = error.code(), detail = %error, refused, "webhook refused (at most one line per integration per minute; `refused` counts them)");
            }
            (error.outcome(), error.error_response())
        }
    };
    state.metrics.requests.with_label_values(&[kind_label, outcome]).inc();
    state.metrics.request_duration.with_label_values(&[kind_label]).observe(started.elapsed().as_secs_f64());
    response
}

async fn accept(
    req: &HttpRequest,
    integration_id: &str,
    kind: Option<EventKind>,
    token: &str,
    payload: web::Payload,
    state: &AppState,
) -> Result<Accepted, WebhookError> {
    let integrations = state.integrations.current();
    let integration = match integrations.get(integration_id) {
        Some(integration) => authenticate(Some(integration), kind, token)?,
        None => return Err(not_in_force(integrations.refused_outright(integration_id), kind, token)),
    };
    let kind = kind.ok_or(WebhookError::NotFound)?;
    let body = read_body(req, payload, state.max_body_bytes).await?;
    let received_at = chrono::Utc::now();
    let event = verbox::parse_at(&body, received_at)?;
    if let Some(expected) = &integration.verbox_secret_key {
        if !event.secret_key.as_deref().is_some_and(|given| expected.matches(given)) {
            return Err(WebhookError::Unauthorized);
        }
    }
    if !integration.accepts_event(kind, event.event_name.as_deref()) {
        let name = event.event_name.as_deref().unwrap_or("(none)");
        return Ok(Accepted::Ignored(format!("eventId {name} is not delivered on the {kind} URL")));
    }
    let event_id = EventId::derive(&integration.id, kind, &event, &body);
    let text = String::from_utf8(body.to_vec()).map_err(|_| WebhookError::BodyUnreadable)?;
    let envelope = Envelope {
        schema: ENVELOPE_SCHEMA,
        event_id: event_id.clone(),
        integration: integration.id.clone(),
        kind,
        received_at,
        accepted_by: Some(bridge_shared::service::host_name().to_owned()),
        payload: serde_json::value::RawValue::from_string(text).map_err(|_| WebhookError::BodyUnreadable)?,
    };
    match state.sink.store(kind, &envelope.to_bytes()).await {
        Ok(stored) => Ok(Accepted::Stored(stored, event_id, times_out_of_range(&event))),
        Err(error) => {
            tracing::error!(integration = %integration.id, %error, "event refused: neither broker nor spool can take it");
            Err(WebhookError::Unavailable)
        }
    }
}

/// The most out-of-range times named in an answer: a body can hold thousands, one is enough to act on.
const TIMES_NAMED: usize = 10;

fn times_out_of_range(event: &verbox::VerboxEvent) -> Vec<String> {
    event.times_out_of_range.iter().take(TIMES_NAMED).map(ToString::to_string).collect()
}

/// A sender's clock is broken: the event is delivered (its messages undated, so dated by the ones
/// around them or the receipt), and the operator told, at most once per integration per minute.
fn warn_times_out_of_range(state: &AppState, integration: &str, event_id: &EventId, times: &[String]) {
    let Some(first) = times.first() else { return };
    if let Some(events) = state.times_out_of_range.due(integration, Instant::now()) {
        tracing::warn!(
            integration, %event_id, %first, events,
            "webhook accepted with message times outside 2000-01-01 .. now + 1 day: those messages count as undated (at most one line per integration per minute; `events` counts them)"
        );
    }
}

/// One answer for an unknown integration, a wrong token, an inactive integration and a disabled
/// offline URL. The token is compared in constant time, against a stand-in when the integration is
/// unknown, so timing does not tell which integrations exist.
fn authenticate<'a>(
    integration: Option<&'a Integration>,
    kind: Option<EventKind>,
    token: &str,
) -> Result<&'a Integration, WebhookError> {
    let token_ok = authenticate_token(integration.map(|i| &i.webhook_token), token);
    match integration {
        Some(i) if token_ok && i.active && (kind != Some(EventKind::Offline) || i.offline_enabled) => Ok(i),
        _ => Err(WebhookError::NotFound),
    }
}

/// Whether `token` is `expected`, in constant time; compared against a stand-in when there is none.
fn authenticate_token(expected: Option<&Secret>, token: &str) -> bool {
    static STAND_IN: std::sync::LazyLock<Secret> = std::sync::LazyLock::new(|| Secret::new("x".repeat(32)));
    let matched = expected.unwrap_or(&STAND_IN).matches(token);
    matched && expected.is_some()
}

/// A webhook for an integration this server knows of only as refused (its stored settings do not
/// validate here, a variable missing, say): one that presents the stored version's token is asked
/// to retry, since Verbox retries a 503 and not a 404; anything else gets the unknown
/// integration's answer.
fn not_in_force(refused: Option<&Refused>, kind: Option<EventKind>, token: &str) -> WebhookError {
    let stored_token = refused.and_then(|r| r.webhook_token.as_ref());
    if authenticate_token(stored_token, token) && kind.is_some() {
        WebhookError::NotApplied
    } else {
        WebhookError::NotFound
    }
}

async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<web::Bytes, WebhookError> {
    let declared =
        req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(WebhookError::TooLarge(limit));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(4096).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| WebhookError::BodyUnreadable)?;
        if body.len() + chunk.len() > limit {
            return Err(WebhookError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
