//! Where a consumed message ends: acked after delivery (ledger first), or published with a confirm
//! to a retry queue or the dead-letter queue and only then acked. If that publish fails the message
//! is handed back to the broker (nack, requeue), so it is never lost.

use std::sync::Arc;
use std::time::Duration;

use bridge_shared::amqp::headers::{self, DeadClass};
use bridge_shared::amqp::topology::RETRY_TIER_HEADER;
use bridge_shared::amqp::{Publisher, Topology};
use bridge_shared::retry_policy::{park_tier, retry_tier};
use bridge_shared::telemetry::DeliverMetrics;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::FieldTable;
use tokio::sync::watch;

use crate::ledger::Ledger;
use crate::pending::{headers_of, Pending};

/// What is known of a message that could not even be parsed into a [`Pending`].
pub struct Raw<'a> {
    pub integration: Option<&'a str>,
    pub kind: Option<&'a str>,
}

pub struct Outlet {
    pub publisher: watch::Receiver<Option<Arc<Publisher>>>,
    pub topology: Topology,
    pub ledger: Arc<Ledger>,
    pub metrics: DeliverMetrics,
    pub retry_for: Duration,
}

/// `x-bridge-error` is for operators: short, one line.
fn short(error: &str) -> String {
    let line = error.replace(['\n', '\r'], " ");
    match line.char_indices().nth(500) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

impl Outlet {
    fn count(&self, kind: &str, outcome: &str, n: usize) {
        self.metrics.events.with_label_values(&[kind, outcome]).inc_by(n as u64);
    }

    /// CoMagic took these items (or already had them: `duplicate`): ledger, then ack.
    pub async fn delivered(&self, batch: Vec<Pending>, duplicate: bool) {
        if batch.is_empty() {
            return;
        }
        if let Err(error) = self.ledger.record(batch.iter().map(|p| p.item.ext_id())).await {
            // Still ack: CoMagic has the items, and a redelivery would only meet duplicate_entity.
            tracing::error!(%error, "could not record delivered ext_ids in the ledger");
        }
        let now = chrono::Utc::now();
        for p in &batch {
            let kind = p.kind().as_str();
            let latency = (now - p.envelope.received_at).to_std().unwrap_or_default();
            self.metrics.end_to_end.with_label_values(&[kind]).observe(latency.as_secs_f64());
            self.metrics.attribution.with_label_values(&[kind, p.rule.as_str()]).inc();
            self.count(kind, if duplicate { "duplicate" } else { "delivered" }, 1);
            tracing::info!(integration = %p.envelope.integration, kind, event_id = %p.envelope.event_id, rule = p.rule.as_str(), duplicate, latency_ms = latency.as_millis() as u64, "delivered");
            ack(&p.delivery).await;
        }
    }

    /// Acks a message that needs nothing more (a skip, or one the ledger knows).
    pub async fn done(&self, delivery: &Delivery, kind: &str, outcome: &str) {
        self.count(kind, outcome, 1);
        ack(delivery).await;
    }

    /// Holds the message in a retry queue for about `wait` without counting an attempt.
    pub async fn park(&self, p: Pending, wait: Duration) {
        let tier = park_tier(wait);
        let kind = p.kind().as_str();
        if self.republish_to_tier(&p.delivery, kind, tier, p.headers()).await {
            self.count(kind, "retried", 1);
        }
    }

    /// A transient failure: the next delayed retry tier, or the dead-letter queue once `retry_for`
    /// has passed since ingest received the event (or since an operator replayed it).
    pub async fn retry(&self, p: Pending, error: &str) {
        let mut h = p.headers();
        let attempts = headers::get_u64(&h, headers::ATTEMPTS).unwrap_or(0) + 1;
        headers::set_u64(&mut h, headers::ATTEMPTS, attempts);
        let since = headers::get_str(&h, headers::REPLAYED_AT)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map_or(p.envelope.received_at, |t| t.with_timezone(&chrono::Utc));
        let age = (chrono::Utc::now() - since).to_std().unwrap_or_default();
        if age >= self.retry_for {
            let error = format!("still failing after {}s: {error}", age.as_secs());
            return self.dead_with(&p.delivery, h, DeadClass::RetriesExhausted, &error, p.raw()).await;
        }
        let retries = headers::get_u64(&h, headers::RETRIES).unwrap_or(0);
        headers::set_u64(&mut h, headers::RETRIES, retries + 1);
        let kind = p.kind().as_str();
        let tier = retry_tier(retries as u32);
        tracing::warn!(integration = %p.envelope.integration, kind, event_id = %p.envelope.event_id, attempts, tier, error = %short(error), "delivery failed; retrying later");
        if self.republish_to_tier(&p.delivery, kind, tier, h).await {
            self.count(kind, "retried", 1);
        }
    }

    pub async fn dead(&self, p: Pending, class: DeadClass, error: &str) {
        let mut h = p.headers();
        let attempts = headers::get_u64(&h, headers::ATTEMPTS).unwrap_or(0) + 1;
        headers::set_u64(&mut h, headers::ATTEMPTS, attempts);
        self.dead_with(&p.delivery, h, class, error, p.raw()).await
    }

    pub async fn dead_raw(&self, delivery: &Delivery, raw: Raw<'_>, class: DeadClass, error: &str) {
        self.dead_with(delivery, headers_of(delivery), class, error, raw).await
    }

    async fn dead_with(&self, delivery: &Delivery, mut h: FieldTable, class: DeadClass, error: &str, raw: Raw<'_>) {
        let error = short(error);
        headers::set_str(&mut h, headers::ERROR_CLASS, class.as_str());
        headers::set_str(&mut h, headers::ERROR, &error);
        if headers::get_u64(&h, headers::ATTEMPTS).is_none() {
            headers::set_u64(&mut h, headers::ATTEMPTS, 0);
        }
        headers::set_str(&mut h, headers::DEAD_AT, &chrono::Utc::now().to_rfc3339());
        headers::set_str(&mut h, headers::INTEGRATION, raw.integration.unwrap_or(""));
        headers::set_str(&mut h, headers::KIND, raw.kind.unwrap_or(""));
        let kind = raw.kind.unwrap_or("unknown");
        tracing::warn!(integration = raw.integration.unwrap_or(""), kind, class = class.as_str(), %error, "dead-lettered");
        let exchange = self.topology.dead_exchange();
        if self.publish_then_ack(delivery, &exchange, raw.kind.unwrap_or(""), h).await {
            self.count(kind, "dead_lettered", 1);
        }
    }

    async fn republish_to_tier(&self, delivery: &Delivery, kind: &str, tier: &str, mut h: FieldTable) -> bool {
        headers::set_str(&mut h, RETRY_TIER_HEADER, tier);
        let exchange = self.topology.retry_exchange();
        // The routing key stays the kind: the retry queue dead-letters it back to the events
        // exchange with it.
        self.publish_then_ack(delivery, &exchange, kind, h).await
    }

    async fn publish_then_ack(&self, delivery: &Delivery, exchange: &str, key: &str, h: FieldTable) -> bool {
        let publisher = self.publisher.borrow().clone();
        let Some(publisher) = publisher else {
            // No broker: the delivery's channel is gone and the broker will redeliver it.
            return false;
        };
        match publisher.publish(exchange, key, &delivery.data, h).await {
            Ok(()) => {
                ack(delivery).await;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "could not move a message; handing it back to the broker");
                let _ = delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                false
            }
        }
    }
}

impl Pending {
    fn raw(&self) -> Raw<'_> {
        Raw { integration: Some(&self.envelope.integration), kind: Some(self.kind().as_str()) }
    }
}

/// Acks; a failure means the channel is gone and the broker redelivers (the ledger then skips it).
async fn ack(delivery: &Delivery) {
    if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
        tracing::debug!(%error, "ack failed; the broker will redeliver");
    }
}
