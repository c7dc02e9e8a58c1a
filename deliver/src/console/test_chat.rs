//! "Send a test chat": a synthetic finished dialog, marked as a test in its text and its dialog
//! id, posted through the integration's public chat URL with its secret, as Verbox would; then
//! what deliver reports of it on the traces exchange (`bridge_shared::trace`), kept here for the
//! API and the page to poll. Against a real account this creates one real chat.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use bridge_shared::amqp::session;
use bridge_shared::amqp::Topology;
use bridge_shared::event::{EventId, EventKind};
use bridge_shared::lifecycle::Shutdown;
use bridge_shared::settings::AmqpSettings;
use bridge_shared::trace::{Trace, TEST_DIALOG_PREFIX};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use serde_json::{json, Value};

use super::error::ApiError;
use super::principal::Principal;
use super::ConsoleState;

/// How long a test chat keeps asking while ingest answers 404 (it has not loaded the
/// integration yet).
const RELOAD_GRACE: Duration = Duration::from_secs(5);

/// Test chats remembered (the oldest is forgotten first).
const KEPT: usize = 1000;

/// Test chats an integration may send at once, and how often one more is allowed after that:
/// each is a real chat in the tenant's CoMagic account.
pub const TEST_CHAT_BURST: u32 = 10;
pub const TEST_CHAT_REFILL: Duration = Duration::from_secs(60);

/// Each test chat's integration and steps by event id, and the ids in the order they were sent.
type Followed = (HashMap<String, (String, Vec<Trace>)>, VecDeque<String>);

/// What is known of each test chat sent from this console.
#[derive(Default)]
pub struct TestChats {
    chats: Mutex<Followed>,
}

impl TestChats {
    fn sent(&self, event_id: &str, integration: &str) {
        let mut guard = self.chats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (chats, order) = &mut *guard;
        if chats.insert(event_id.to_owned(), (integration.to_owned(), Vec::new())).is_none() {
            order.push_back(event_id.to_owned());
        }
        while order.len() > KEPT {
            if let Some(oldest) = order.pop_front() {
                chats.remove(&oldest);
            }
        }
    }

    fn record(&self, trace: Trace) {
        let mut guard = self.chats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, steps)) = guard.0.get_mut(&trace.event_id) {
            steps.push(trace);
        }
    }

    /// The test chat's integration and steps.
    fn steps(&self, event_id: &str) -> Option<(String, Vec<Trace>)> {
        self.chats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.get(event_id).cloned()
    }

    /// Listens on the traces exchange until `stop`, reconnecting when the broker goes away.
    pub async fn listen(self: std::sync::Arc<Self>, amqp: AmqpSettings, stop: Shutdown) {
        loop {
            tokio::select! {
                result = self.consume(&amqp) => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "the console lost the traces exchange; test chats are not followed until it is back");
                    }
                }
                _ = stop.stopped() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.stopped() => return,
            }
        }
    }

    async fn consume(&self, amqp: &AmqpSettings) -> Result<(), Box<dyn std::error::Error>> {
        let topology = Topology::new(&amqp.topology_prefix);
        let connection = session::connect_first(&amqp.nodes(), "verbox-bridge console").await?;
        let channel = connection.create_channel().await?;
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        let exchange = topology.traces_exchange();
        channel
            .exchange_declare(exchange.as_str().into(), lapin::ExchangeKind::Fanout, durable, FieldTable::default())
            .await?;
        // A queue of this console's own, gone with its connection.
        let mine = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let queue = channel.queue_declare("".into(), mine, FieldTable::default()).await?;
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.name().clone(),
                "console".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery?;
            if let Ok(trace) = serde_json::from_slice::<Trace>(&delivery.data) {
                self.record(trace);
            }
            delivery.acker.ack(BasicAckOptions::default()).await?;
        }
        Ok(())
    }
}

/// A finished dialog that says it is a test, with a dialog id no real one has.
fn test_dialog(integration: &str) -> Value {
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    json!({
        "eventId": "dialogFinished",
        "data": {
            // A chat without a phone or e-mail is skipped: the address is reserved, it reaches no one.
            "client": {"clientId": format!("{TEST_DIALOG_PREFIX}client"), "name": "verbox-bridge test", "email": "test-chat@verbox-bridge.example"},
            "dialog": {"id": format!("{TEST_DIALOG_PREFIX}{integration}-{nanos}"), "messages": [
                {"id": 1, "whoSend": "client", "text": "[verbox-bridge test chat] sent from the settings console", "dateTimeUTC": now},
                {"id": 2, "whoSend": "operator", "text": "[verbox-bridge test chat] no one needs to answer this", "dateTimeUTC": now}
            ]}
        }
    })
}

/// Posts a test chat through the integration's public chat URL, as Verbox would.
pub async fn send(
    state: web::Data<ConsoleState>,
    by: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let integration = state.stored_integration(&id, &by).await?;
    state
        .test_chat_allowances
        .take(&integration.id)
        .map_err(|retry_after| ApiError::TooMany { what: "test chats of this integration", retry_after })?;
    let mut dialog = test_dialog(&integration.id);
    if let Some(secret) = &integration.verbox_secret_key {
        dialog["secretKey"] = json!(secret.expose());
    }
    let body = serde_json::to_vec(&dialog).expect("a dialog serialises");
    let event =
        bridge_shared::verbox::parse(&body).map_err(|e| ApiError::Unavailable(format!("the test chat: {e}")))?;
    let event_id = EventId::derive(&integration.id, EventKind::Chat, &event, &body);
    let url = bridge_shared::setup::webhook_url(&state.settings.ingest.public_url, &integration, "chat");
    state.test_chats.sent(event_id.as_str(), &integration.id);
    // A new or just-changed integration reaches ingest within moments (the file is polled every
    // 2 s): a 404 is asked again for a little while before it is the answer.
    let deadline = tokio::time::Instant::now() + RELOAD_GRACE;
    let answer = loop {
        let answer = state.http.post(&url).header("content-type", "application/json").body(body.clone()).send().await;
        match answer {
            Ok(r) if r.status() == 404 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => break other,
        }
    };
    let (status, accepted) = match answer {
        Ok(response) => (Some(response.status().as_u16()), response.status().is_success()),
        Err(error) => {
            // The error may quote the URL, which holds the webhook token: say what failed only.
            let why = if error.is_timeout() {
                "timed out"
            } else if error.is_connect() {
                "no connection"
            } else {
                "failed"
            };
            tracing::warn!(integration = %integration.id, why, "a test chat could not be posted to ingest");
            (None, false)
        }
    };
    Ok(HttpResponse::Ok().json(json!({
        "event_id": event_id.as_str(),
        "ingest_status": status,
        "accepted": accepted,
        "note": "against a real CoMagic account this creates one real chat",
    })))
}

/// What is known of a test chat: each step deliver reported, the latest last. A tenant follows
/// its own integration's only (another's is not found, as one never sent).
pub async fn follow(
    state: web::Data<ConsoleState>,
    by: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let steps = state
        .test_chats
        .steps(&id)
        .filter(|(integration, _)| by.sees(integration))
        .map(|(_, steps)| steps)
        .ok_or_else(|| ApiError::NotFound(format!("no test chat `{id}` sent from this console")))?;
    let latest = steps.last().map(|t| t.outcome.clone());
    Ok(HttpResponse::Ok().json(json!({"event_id": id.as_str(), "outcome": latest, "steps": steps})))
}
