//! Where a consumed message ends: acked after delivery (ledger first), or published with a confirm
//! to a retry queue or the dead-letter queue and only then acked.
//!
//! A publish that fails while the connection is up (a quorum leader election, a queue briefly
//! missing, a confirm that does not come) is tried again here with backoff, with the message still
//! in hand, for up to [`MOVE_RETRY_FOR`]. Handing it straight back to the broker would count a
//! delivery per round, and a few seconds of trouble would make a healthy event `poison`. Only after
//! that is it handed back (nack, requeue), so it is never lost. Such an outage is logged once
//! ([`warnings`]).

mod warnings;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bridge_shared::amqp::headers::{self, DeadClass};
use bridge_shared::amqp::topology::RETRY_TIER_HEADER;
use bridge_shared::amqp::{Publisher, Topology};
use bridge_shared::comagic::Success;
use bridge_shared::redact::for_operators;
use bridge_shared::retry_policy::{move_retries, park_tier, retry_tier};
use bridge_shared::telemetry::DeliverMetrics;
use bridge_shared::trace::Trace;
use chrono::{DateTime, Utc};
use lapin::types::FieldTable;
use tokio::sync::watch;

pub use self::warnings::RetryWarnings;
use crate::acks::{Acks, Message, Ticket};
use crate::journey::{Entry, Facts, Journal};
use crate::ledger::Ledger;

/// How long a message is held while its move to a retry or dead queue keeps failing.
pub const MOVE_RETRY_FOR: Duration = Duration::from_secs(60);
use crate::pending::{headers_of, Pending};

/// How long an event of an integration refused outright waits before its first new look: a fix is
/// a save, and a save applies within seconds.
const REFUSED_WAIT: Duration = Duration::from_secs(10);

/// What is known of a message that could not even be parsed into a [`Pending`].
pub struct Raw<'a> {
    pub integration: Option<&'a str>,
    pub kind: Option<&'a str>,
}

pub struct Outlet {
    /// The broker link's publisher while a session is up (moves wait for it).
    pub publisher: watch::Receiver<Option<Arc<Publisher>>>,
    /// Names the retry and dead exchanges.
    pub topology: Topology,
    /// Written before a delivered message is acked; claims are released through it.
    pub ledger: Arc<Ledger>,
    pub metrics: DeliverMetrics,
    /// Settles what the consumers took, coalescing acks per channel.
    pub acks: Acks,
    pub retry_for: Duration,
    /// How long a paused integration's event is parked before it is dead-lettered.
    pub park_for: Duration,
    /// Logs failing moves once per outage.
    pub move_warnings: RetryWarnings,
    /// Where each event's steps are kept.
    pub journal: Arc<Journal>,
}

/// The `delivered` step of the `i`th of `items` events in one call; `sent` names the id CoMagic
/// gave each (`result.data`, one `{id}` per item, in order), none when CoMagic had it already.
fn delivered_step(p: &Pending, i: usize, items: usize, sent: Option<&Success>) -> Trace {
    let mut step = Trace::new(p.envelope.event_id.as_str(), &p.envelope.integration, "delivered");
    step.rule = Some(p.rule.as_str().to_owned());
    match sent {
        Some(success) => {
            step.comagic_id = success.result.pointer(&format!("/data/{i}/id")).and_then(serde_json::Value::as_u64);
            step.items = Some(items);
        }
        None => step.error = Some("CoMagic had it already (a duplicate, or found in its report)".into()),
    }
    step
}

/// When `h` says something began (`key`, RFC 3339), or a replay later than that.
fn since(h: &FieldTable, key: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let read = |key| {
        headers::get_str(h, key)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    match (read(key), read(headers::REPLAYED_AT)) {
        (Some(t), Some(replayed)) => Some(t.max(replayed)),
        (t, replayed) => t.or(replayed),
    }
}

fn age(from: chrono::DateTime<chrono::Utc>) -> Duration {
    (chrono::Utc::now() - from).to_std().unwrap_or_default()
}

/// `x-bridge-error` and the log lines are for operators: one short line, contacts masked.
fn short(error: &str) -> String {
    for_operators(error, 500)
}

impl Outlet {
    fn count(&self, kind: &str, outcome: &str, n: usize) {
        self.metrics.events.with_label_values(&[kind, outcome]).inc_by(n as u64);
    }

    /// CoMagic took these items (`sent`, whose answer names the id it gave each, in order) or
    /// already had them (`None`: a duplicate, or found in its report): ledger and journey, then ack.
    pub async fn delivered(&self, batch: Vec<Pending>, sent: Option<&Success>) {
        if batch.is_empty() {
            return;
        }
        let duplicate = sent.is_none();
        let steps: Vec<Trace> =
            batch.iter().enumerate().map(|(i, p)| delivered_step(p, i, batch.len(), sent)).collect();
        for (p, step) in batch.iter().zip(&steps).filter(|(p, _)| p.test) {
            self.publish_trace(p, step.clone()).await;
        }
        let journeys = batch
            .iter()
            .zip(steps)
            .filter_map(|(p, step)| {
                let fresh = !p.in_journey.load(Ordering::Relaxed);
                self.journal.entry(p, step).map(|e| Entry { fresh, ..e })
            })
            .collect();
        let ext_ids: Vec<&str> = batch.iter().map(|p| p.item.ext_id()).collect();
        if let Err(error) = self.ledger.record(&ext_ids, journeys).await {
            // Still ack: CoMagic has the items, and a redelivery would only meet duplicate_entity.
            tracing::error!(%error, "could not record delivered ext_ids in the ledger");
        }
        let now = chrono::Utc::now();
        // A batch is one integration's.
        let integration = batch[0].envelope.integration.as_str();
        if !duplicate {
            self.metrics.integration_delivered.with_label_values(&[integration]).inc_by(batch.len() as u64);
            self.metrics.integration_last_delivery.with_label_values(&[integration]).set(now.timestamp());
        }
        for p in &batch {
            let kind = p.kind().as_str();
            let latency = (now - p.envelope.received_at).to_std().unwrap_or_default();
            self.metrics.end_to_end.with_label_values(&[kind]).observe(latency.as_secs_f64());
            self.metrics.integration_end_to_end.with_label_values(&[integration]).observe(latency.as_secs_f64());
            self.metrics.attribution.with_label_values(&[kind, p.rule.as_str()]).inc();
            self.count(kind, if duplicate { "duplicate" } else { "delivered" }, 1);
            tracing::info!(integration = %p.envelope.integration, kind, event_id = %p.envelope.event_id, rule = p.rule.as_str(), duplicate, latency_ms = latency.as_millis() as u64, "delivered");
        }
        Ticket::ack_all(batch.iter().map(|p| &p.message.ticket)).await;
    }

    /// Acks a message that needs nothing more (a skip, or one the ledger knows).
    pub async fn done(&self, ticket: &Ticket, kind: &str, outcome: &str) {
        self.count(kind, outcome, 1);
        ticket.ack().await;
    }

    /// Acks an event CoMagic cannot take (`reason`: no contact, an empty chat), noted in its
    /// journey (after its replay, when an operator `replayed` it at that time).
    pub async fn skipped(&self, ticket: &Ticket, facts: &Facts<'_>, reason: &str, replayed: Option<DateTime<Utc>>) {
        let e = facts.envelope;
        let step = |outcome| Trace::new(e.event_id.as_str(), &e.integration, outcome);
        if let Some(at) = replayed {
            self.journal.note(self.journal.entry_of(facts, Trace { at, ..step("replayed") }));
        }
        let skipped = Trace { error: Some(reason.to_owned()), ..step("skipped") };
        self.journal.note(self.journal.entry_of(facts, skipped));
        self.done(ticket, e.kind.as_str(), "skipped").await;
    }

    /// Holds the message in a retry queue for about `wait` without counting an attempt (a saturated
    /// lane, a spent quota).
    pub async fn park(&self, p: Pending, wait: Duration) {
        self.trace(&p, "parked", |t| Trace { tier: Some(park_tier(wait).to_owned()), ..t }).await;
        self.park_with(&p.message, p.kind().as_str(), wait, p.headers()).await
    }

    /// Parks the event of a paused integration; once it has waited `park_for` since it was first
    /// parked (or replayed), it is dead-lettered as `tenant_paused` instead, to be replayed when the
    /// account is fixed: an integration nobody repairs must not keep its events cycling for ever.
    pub async fn park_paused(&self, p: Pending, wait: Duration) {
        self.park_until_fixed(&p.message, p.headers(), p.raw(), wait, "its integration stayed paused", Some(&p)).await
    }

    /// Parks the event of an integration this process refuses outright (its stored settings do not
    /// validate here and it has no earlier good version), as a paused one's: its operator is told
    /// (`bridge_integration_invalid`) and the fix is a save away; an unknown one's is dead.
    /// It comes back after [`REFUSED_WAIT`] first, then after about as long as it has waited: a fix
    /// made at once is soon seen, one that takes a day costs few rounds.
    pub async fn park_refused(&self, message: &Message, raw: Raw<'_>) {
        let h = headers_of(&message.delivery);
        let waited = since(&h, headers::PARKED_SINCE).map(age).unwrap_or_default();
        let why = "its integration's settings stayed refused by this process";
        self.park_until_fixed(message, h, raw, waited.max(REFUSED_WAIT), why, None).await
    }

    /// `p`: the event's journey, when it was read far enough to have one.
    async fn park_until_fixed(
        &self,
        message: &Message,
        mut h: FieldTable,
        raw: Raw<'_>,
        wait: Duration,
        why: &str,
        p: Option<&Pending>,
    ) {
        match since(&h, headers::PARKED_SINCE) {
            Some(first) if age(first) >= self.park_for => {
                let error = format!("{why} for {}s", age(first).as_secs());
                if let Some(p) = p {
                    let class = Some(DeadClass::TenantPaused.as_str().to_owned());
                    self.trace_end(p, "dead_lettered", |t| Trace { class, ..t.with_error(&error) }).await;
                }
                return self.dead_with(message, h, DeadClass::TenantPaused, &error, raw).await;
            }
            Some(_) => {}
            None => headers::set_str(&mut h, headers::PARKED_SINCE, &chrono::Utc::now().to_rfc3339()),
        }
        self.park_with(message, raw.kind.unwrap_or("unknown"), wait, h).await
    }

    async fn park_with(&self, message: &Message, kind: &str, wait: Duration, h: FieldTable) {
        if self.republish_to_tier(message, kind, park_tier(wait), h).await {
            self.count(kind, "retried", 1);
        }
    }

    /// Notes a step of `p`'s journey (`outcome`, with `details`), and publishes it when `p` is a
    /// test chat (`bridge_shared::trace`). Never waits for the journey.
    pub async fn trace(&self, p: &Pending, outcome: &str, details: impl FnOnce(Trace) -> Trace) {
        p.in_journey.store(true, Ordering::Relaxed);
        let step = self.step(p, outcome, details);
        if p.test {
            self.publish_trace(p, step.clone()).await;
        }
        self.journal.note(self.journal.entry(p, step));
    }

    /// [`Self::trace`] of a step that ends the journey: waited for (briefly) before its ack.
    async fn trace_end(&self, p: &Pending, outcome: &str, details: impl FnOnce(Trace) -> Trace) {
        p.in_journey.store(true, Ordering::Relaxed);
        let step = self.step(p, outcome, details);
        if p.test {
            self.publish_trace(p, step.clone()).await;
        }
        self.journal.note_and_wait(self.journal.entry(p, step)).await;
    }

    fn step(&self, p: &Pending, outcome: &str, details: impl FnOnce(Trace) -> Trace) -> Trace {
        let mut step = Trace::new(p.envelope.event_id.as_str(), &p.envelope.integration, outcome);
        step.rule = Some(p.rule.as_str().to_owned());
        details(step)
    }

    /// Best effort: a trace that cannot be published is only logged.
    async fn publish_trace(&self, p: &Pending, trace: Trace) {
        let body = serde_json::to_vec(&trace).expect("a trace serialises");
        let publisher = self.publisher.borrow().clone();
        let published = match publisher {
            Some(publisher) => publisher
                .publish(&self.topology.traces_exchange(), "", &body, FieldTable::default())
                .await
                .map_err(|e| e.to_string()),
            None => Err("no broker session".into()),
        };
        if let Err(error) = published {
            tracing::info!(event_id = %p.envelope.event_id, %error, "a test chat's trace was not published");
        }
    }

    /// A transient failure: the next delayed retry tier, or the dead-letter queue once `retry_for`
    /// has passed since ingest received the event (or since an operator replayed it).
    pub async fn retry(&self, p: Pending, error: &str) {
        let mut h = p.headers();
        let attempts = headers::get_u64(&h, headers::ATTEMPTS).unwrap_or(0) + 1;
        headers::set_u64(&mut h, headers::ATTEMPTS, attempts);
        let age = age(since(&h, headers::REPLAYED_AT).unwrap_or(p.envelope.received_at));
        if age >= self.retry_for {
            let error = format!("still failing after {}s: {error}", age.as_secs());
            self.trace_end(&p, "dead_lettered", |t| Trace {
                class: Some("retries_exhausted".into()),
                ..t.with_error(&error)
            })
            .await;
            return self.dead_with(&p.message, h, DeadClass::RetriesExhausted, &error, p.raw()).await;
        }
        let retries = headers::get_u64(&h, headers::RETRIES).unwrap_or(0);
        headers::set_u64(&mut h, headers::RETRIES, retries + 1);
        let kind = p.kind().as_str();
        let tier = retry_tier(retries as u32);
        self.trace(&p, "retrying", |t| Trace { tier: Some(tier.to_owned()), ..t.with_error(error) }).await;
        tracing::warn!(integration = %p.envelope.integration, kind, event_id = %p.envelope.event_id, attempts, tier, error = %short(error), "delivery failed; retrying later");
        if self.republish_to_tier(&p.message, kind, tier, h).await {
            self.count(kind, "retried", 1);
        }
    }

    pub async fn dead(&self, p: Pending, class: DeadClass, error: &str) {
        let mut h = p.headers();
        let attempts = headers::get_u64(&h, headers::ATTEMPTS).unwrap_or(0) + 1;
        headers::set_u64(&mut h, headers::ATTEMPTS, attempts);
        self.trace_end(&p, "dead_lettered", |t| Trace { class: Some(class.as_str().into()), ..t.with_error(error) })
            .await;
        self.dead_with(&p.message, h, class, error, p.raw()).await
    }

    pub async fn dead_raw(&self, message: &Message, raw: Raw<'_>, class: DeadClass, error: &str) {
        self.dead_with(message, headers_of(&message.delivery), class, error, raw).await
    }

    async fn dead_with(&self, message: &Message, mut h: FieldTable, class: DeadClass, error: &str, raw: Raw<'_>) {
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
        if self.publish_then_ack(message, &exchange, raw.kind.unwrap_or(""), h).await {
            self.count(kind, "dead_lettered", 1);
        }
    }

    /// A panic (a bug) interrupted the handling of these messages: each one not yet settled goes
    /// back to the broker, which redelivers it and counts the delivery (poison after the limit).
    pub async fn hand_back_after_panic(&self, stage: &str, tickets: &[Ticket], reason: String) {
        self.metrics.panics.with_label_values(&[stage]).inc();
        let reason = short(&reason);
        tracing::error!(stage, %reason, messages = tickets.len(), "handling messages panicked; handing them back to the broker");
        for ticket in tickets {
            ticket.hand_back().await;
        }
    }

    async fn republish_to_tier(&self, message: &Message, kind: &str, tier: &str, mut h: FieldTable) -> bool {
        headers::set_str(&mut h, RETRY_TIER_HEADER, tier);
        let exchange = self.topology.retry_exchange();
        // The routing key stays the message's own (`chat`, `offline.large`, ...): the retry queue
        // dead-letters it back to the events exchange with it, and so to the queue it came from.
        let key = message.delivery.routing_key.as_str();
        let key = if key.is_empty() { kind } else { key };
        self.publish_then_ack(message, &exchange, key, h).await
    }

    async fn publish_then_ack(&self, message: &Message, exchange: &str, key: &str, h: FieldTable) -> bool {
        let mut delays = move_retries(MOVE_RETRY_FOR);
        loop {
            let publisher = self.publisher.borrow().clone();
            // No broker, or a message from a connection that is gone: the broker redelivers it.
            let Some(publisher) = publisher.filter(|_| message.ticket.unsettled()) else { return false };
            let error = match publisher.publish(exchange, key, &message.delivery.data, h.clone()).await {
                Ok(()) => {
                    self.move_warnings.succeeded(exchange);
                    message.ticket.ack().await;
                    return true;
                }
                Err(error) => error,
            };
            self.metrics.move_failures.inc();
            self.move_warnings.failed(exchange, &error);
            match delays.next_delay() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => {
                    self.move_warnings.handed_back(exchange);
                    message.ticket.hand_back().await;
                    return false;
                }
            }
        }
    }
}

impl Pending {
    pub(crate) fn raw(&self) -> Raw<'_> {
        Raw { integration: Some(&self.envelope.integration), kind: Some(self.kind().as_str()) }
    }
}
