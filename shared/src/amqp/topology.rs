//! The RabbitMQ topology of CONTRACT.md, declared idempotently by both binaries.
//!
//! ```text
//! {p}.events (direct) --chat|offline--> {p}.deliver (quorum, x-delivery-limit; over it → {p}.dead)
//! {p}.retry (headers, x-bridge-retry-tier) --> {p}.retry.<delay> (quorum, TTL) --expired--> {p}.events
//! {p}.dead (fanout) --> {p}.dead (quorum)
//! ```
//! The retry exchange routes on a header so a message keeps its `chat`/`offline` routing key, which
//! is what it is dead-lettered back to `{p}.events` with when its delay expires.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::event::EventKind;

/// Deliveries of one message before the broker itself dead-letters it as poison.
pub const DELIVERY_LIMIT: i64 = 10;

/// The dead-letter queue's own limit, set so it never applies: `deliver dlq list` and `export` read
/// messages and put them back, and RabbitMQ 4.0–4.2 count each put-back against a default limit of
/// 20 and then drop the message. Explicit, so every broker version behaves alike.
pub const DEAD_QUEUE_DELIVERY_LIMIT: i64 = 1_000_000_000;

/// The delayed retry tiers; the last one repeats until `retry_for` has passed.
pub const RETRY_TIERS: [(&str, Duration); 4] = [
    ("10s", Duration::from_secs(10)),
    ("1m", Duration::from_secs(60)),
    ("10m", Duration::from_secs(600)),
    ("1h", Duration::from_secs(3600)),
];

pub const RETRY_TIER_HEADER: &str = "x-bridge-retry-tier";

/// The names of one topology; `prefix` is `bridge` in production and unique per test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Topology { prefix: prefix.into() }
    }

    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
    pub fn deliver_queue(&self) -> String {
        format!("{}.deliver", self.prefix)
    }
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }
    pub fn retry_queue(&self, tier: &str) -> String {
        format!("{}.retry.{tier}", self.prefix)
    }
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn quorum(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text("quorum"));
    for (k, v) in extra {
        args.insert((*k).into(), v.clone());
    }
    args
}

/// At-least-once dead-lettering: the broker keeps a message until the dead-letter target confirms
/// it, so nothing is lost between the queues (it requires `reject-publish` overflow).
fn dead_letter_to(exchange: String) -> [(&'static str, AMQPValue); 3] {
    [
        ("x-dead-letter-exchange", text(&exchange)),
        ("x-dead-letter-strategy", text("at-least-once")),
        ("x-overflow", text("reject-publish")),
    ]
}

pub async fn declare_topology(channel: &Channel, t: &Topology) -> lapin::Result<()> {
    let durable_exchange = ExchangeDeclareOptions { durable: true, ..Default::default() };
    let durable_queue = QueueDeclareOptions { durable: true, ..Default::default() };
    channel
        .exchange_declare(t.events_exchange().into(), ExchangeKind::Direct, durable_exchange, FieldTable::default())
        .await?;
    channel
        .exchange_declare(t.dead_exchange().into(), ExchangeKind::Fanout, durable_exchange, FieldTable::default())
        .await?;
    channel
        .exchange_declare(t.retry_exchange().into(), ExchangeKind::Headers, durable_exchange, FieldTable::default())
        .await?;

    let mut deliver_args = dead_letter_to(t.dead_exchange()).to_vec();
    deliver_args.push(("x-delivery-limit", AMQPValue::LongLongInt(DELIVERY_LIMIT)));
    channel.queue_declare(t.deliver_queue().into(), durable_queue, quorum(&deliver_args)).await?;
    for kind in EventKind::ALL {
        channel
            .queue_bind(
                t.deliver_queue().into(),
                t.events_exchange().into(),
                kind.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }

    let dead_args = [("x-delivery-limit", AMQPValue::LongLongInt(DEAD_QUEUE_DELIVERY_LIMIT))];
    channel.queue_declare(t.dead_queue().into(), durable_queue, quorum(&dead_args)).await?;
    channel
        .queue_bind(
            t.dead_queue().into(),
            t.dead_exchange().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    for (tier, delay) in RETRY_TIERS {
        let mut args = dead_letter_to(t.events_exchange()).to_vec();
        args.push(("x-message-ttl", AMQPValue::LongLongInt(delay.as_millis() as i64)));
        channel.queue_declare(t.retry_queue(tier).into(), durable_queue, quorum(&args)).await?;
        let mut binding = FieldTable::default();
        binding.insert("x-match".into(), text("all"));
        binding.insert(RETRY_TIER_HEADER.into(), text(tier));
        channel
            .queue_bind(
                t.retry_queue(tier).into(),
                t.retry_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                binding,
            )
            .await?;
    }
    Ok(())
}
