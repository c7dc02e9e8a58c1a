//! The RabbitMQ topology of docs/topology.md, declared idempotently by both binaries.
//!
//! ```text
//! {p}.events (direct) --chat|offline--> {p}.deliver (quorum, x-delivery-limit; over it → {p}.dead)
//!                     --chat.large|offline.large--> {p}.deliver.large (the same, for big events)
//! {p}.retry (headers, x-bridge-retry-tier) --> {p}.retry.<delay> (quorum, TTL) --expired--> {p}.events
//! {p}.dead (fanout) --> {p}.dead (quorum)
//! ```
//! The retry exchange routes on a header so a message keeps its routing key, which is what it is
//! dead-lettered back to `{p}.events` with when its delay expires.
//!
//! Events over [`LARGE_EVENT_BYTES`] travel in a queue of their own. deliver's memory is bounded in
//! bytes, but the broker bounds what it sends in messages (the prefetch count), so a window sized
//! for thousands of 2 KB dialogs would be gigabytes of 1 MiB ones. Two queues give each its own
//! window: many small events, few large ones.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ExchangeKind};
use serde_json::{json, Value};

use crate::event::EventKind;

/// Deliveries of one message before the broker itself dead-letters it as poison.
pub const DELIVERY_LIMIT: i64 = 10;

/// The dead-letter queue's own limit, set so it never applies: `deliver dlq list` and `export` read
/// messages and put them back, and RabbitMQ 4.0–4.2 count each put-back against a default limit of
/// 20 and then drop the message. Explicit, so every broker version behaves alike.
pub const DEAD_QUEUE_DELIVERY_LIMIT: i64 = 1_000_000_000;

/// One retry queue per tier of the retry policy.
pub use crate::retry_policy::RETRY_TIERS;

/// The header the retry exchange routes on. Not `x-` prefixed: a headers exchange ignores headers
/// that start with `x-` when it matches, so a binding on one made every tier match every message
/// and each retry was copied into all four tier queues (copies that multiplied on every round).
pub const RETRY_TIER_HEADER: &str = "bridge-retry-tier";

/// The header the retry bindings used before [`RETRY_TIER_HEADER`]; [`declare_topology`] removes
/// those bindings from a broker an earlier release declared, which would go on copying otherwise.
pub const RETIRED_RETRY_TIER_HEADER: &str = "x-bridge-retry-tier";

/// An event message (the envelope) larger than this goes to the large-event queue.
pub const LARGE_EVENT_BYTES: usize = 16 << 10;

/// The routing key of an event message of `len` bytes: its kind, with `.large` past
/// [`LARGE_EVENT_BYTES`].
pub fn event_route(kind: EventKind, len: usize) -> &'static str {
    match (kind, len > LARGE_EVENT_BYTES) {
        (EventKind::Chat, false) => "chat",
        (EventKind::Chat, true) => "chat.large",
        (EventKind::Offline, false) => "offline",
        (EventKind::Offline, true) => "offline.large",
    }
}

/// The kind an event's routing key names (`chat`, `offline.large`, ...).
pub fn kind_of_route(key: &str) -> Option<EventKind> {
    EventKind::parse(key.strip_suffix(".large").unwrap_or(key))
}

/// How many nodes hold a copy of each quorum queue unless `[amqp] quorum_replicas` says otherwise.
/// The broker uses fewer when the cluster has fewer nodes.
pub const DEFAULT_QUORUM_REPLICAS: u8 = 3;

/// The names of one topology; `prefix` is `bridge` in production and unique per test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    quorum_replicas: u8,
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Topology { prefix: prefix.into(), quorum_replicas: DEFAULT_QUORUM_REPLICAS }
    }

    /// Each quorum queue is created with `replicas` members (`x-quorum-initial-group-size`).
    pub fn with_quorum_replicas(self, replicas: u8) -> Self {
        Topology { quorum_replicas: replicas, ..self }
    }

    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
    pub fn deliver_queue(&self) -> String {
        format!("{}.deliver", self.prefix)
    }
    pub fn large_deliver_queue(&self) -> String {
        format!("{}.deliver.large", self.prefix)
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
    /// Where deliver publishes what became of test chats (the `trace` module); the console binds a
    /// queue of its own while it runs.
    pub fn traces_exchange(&self) -> String {
        format!("{}.traces", self.prefix)
    }
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// Arguments in declaration order (the broker compares them as a set).
pub type Arguments = Vec<(&'static str, AMQPValue)>;

pub struct ExchangeSpec {
    pub name: String,
    pub kind: ExchangeKind,
}

pub struct QueueSpec {
    pub name: String,
    pub arguments: Arguments,
}

pub struct BindingSpec {
    pub exchange: String,
    pub queue: String,
    pub routing_key: String,
    pub arguments: Arguments,
}

/// Everything [`declare_topology`] declares, as data: `deploy/rabbitmq/definitions.json` is checked
/// against it, so the file and the code cannot drift apart.
pub struct Plan {
    pub exchanges: Vec<ExchangeSpec>,
    pub queues: Vec<QueueSpec>,
    pub bindings: Vec<BindingSpec>,
    /// Bindings of earlier releases, removed on declare (unbinding one that is absent is a no-op).
    pub retired_bindings: Vec<BindingSpec>,
}

/// The argument a queue declared by an earlier release lacks; see [`declare_topology`].
const GROUP_SIZE: &str = "x-quorum-initial-group-size";

/// At-least-once dead-lettering: the broker keeps a message until the dead-letter target confirms
/// it, so nothing is lost between the queues (it requires `reject-publish` overflow).
fn dead_letter_to(exchange: String) -> [(&'static str, AMQPValue); 3] {
    [
        ("x-dead-letter-exchange", text(&exchange)),
        ("x-dead-letter-strategy", text("at-least-once")),
        ("x-overflow", text("reject-publish")),
    ]
}

pub fn plan(t: &Topology) -> Plan {
    let quorum = |extra: &[(&'static str, AMQPValue)]| -> Arguments {
        let mut args =
            vec![("x-queue-type", text("quorum")), (GROUP_SIZE, AMQPValue::LongLongInt(t.quorum_replicas.into()))];
        args.extend(extra.iter().cloned());
        args
    };
    let exchanges = vec![
        ExchangeSpec { name: t.events_exchange(), kind: ExchangeKind::Direct },
        ExchangeSpec { name: t.dead_exchange(), kind: ExchangeKind::Fanout },
        ExchangeSpec { name: t.retry_exchange(), kind: ExchangeKind::Headers },
        ExchangeSpec { name: t.traces_exchange(), kind: ExchangeKind::Fanout },
    ];
    let mut deliver_args = dead_letter_to(t.dead_exchange()).to_vec();
    deliver_args.push(("x-delivery-limit", AMQPValue::LongLongInt(DELIVERY_LIMIT)));
    let mut queues = vec![
        QueueSpec { name: t.deliver_queue(), arguments: quorum(&deliver_args) },
        QueueSpec { name: t.large_deliver_queue(), arguments: quorum(&deliver_args) },
        QueueSpec {
            name: t.dead_queue(),
            arguments: quorum(&[("x-delivery-limit", AMQPValue::LongLongInt(DEAD_QUEUE_DELIVERY_LIMIT))]),
        },
    ];
    let mut bindings: Vec<BindingSpec> = EventKind::ALL
        .iter()
        .flat_map(|kind| {
            [(event_route(*kind, 0), t.deliver_queue()), (event_route(*kind, usize::MAX), t.large_deliver_queue())]
        })
        .map(|(route, queue)| BindingSpec {
            exchange: t.events_exchange(),
            queue,
            routing_key: route.into(),
            arguments: Vec::new(),
        })
        .collect();
    bindings.push(BindingSpec {
        exchange: t.dead_exchange(),
        queue: t.dead_queue(),
        routing_key: String::new(),
        arguments: Vec::new(),
    });
    let tier_binding = |header: &'static str, tier: &str| BindingSpec {
        exchange: t.retry_exchange(),
        queue: t.retry_queue(tier),
        routing_key: String::new(),
        arguments: vec![("x-match", text("all")), (header, text(tier))],
    };
    let mut retired_bindings = Vec::new();
    for (tier, delay) in RETRY_TIERS {
        let mut args = dead_letter_to(t.events_exchange()).to_vec();
        args.push(("x-message-ttl", AMQPValue::LongLongInt(delay.as_millis() as i64)));
        queues.push(QueueSpec { name: t.retry_queue(tier), arguments: quorum(&args) });
        bindings.push(tier_binding(RETRY_TIER_HEADER, tier));
        retired_bindings.push(tier_binding(RETIRED_RETRY_TIER_HEADER, tier));
    }
    Plan { exchanges, queues, bindings, retired_bindings }
}

fn table(arguments: &Arguments) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in arguments {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// Declares every exchange, queue and binding of the plan (idempotent), and removes retired
/// bindings.
///
/// A queue that an earlier release created has no `x-quorum-initial-group-size`, and the broker
/// refuses a declare whose arguments differ from the queue's. The group size only matters when a
/// queue is created, so such a queue is declared again without it (its members are the broker's
/// business from then on: `rabbitmq-queues grow`). The refusal closes the channel: a new one
/// carries on.
pub async fn declare_topology(connection: &Connection, t: &Topology) -> lapin::Result<()> {
    let plan = plan(t);
    let mut channel = connection.create_channel().await?;
    let durable_exchange = ExchangeDeclareOptions { durable: true, ..Default::default() };
    let durable_queue = QueueDeclareOptions { durable: true, ..Default::default() };
    for e in &plan.exchanges {
        channel
            .exchange_declare(e.name.as_str().into(), e.kind.clone(), durable_exchange, FieldTable::default())
            .await?;
    }
    for q in &plan.queues {
        match channel.queue_declare(q.name.as_str().into(), durable_queue, table(&q.arguments)).await {
            Ok(_) => {}
            Err(error) if error.to_string().contains(GROUP_SIZE) => {
                tracing::info!(queue = %q.name, "queue created by an earlier release, without a replica count; declared as it is");
                channel = connection.create_channel().await?;
                let existing: Arguments = q.arguments.iter().filter(|(k, _)| *k != GROUP_SIZE).cloned().collect();
                channel.queue_declare(q.name.as_str().into(), durable_queue, table(&existing)).await?;
            }
            Err(error) => return Err(error),
        }
    }
    for b in &plan.bindings {
        channel
            .queue_bind(
                b.queue.as_str().into(),
                b.exchange.as_str().into(),
                b.routing_key.as_str().into(),
                QueueBindOptions::default(),
                table(&b.arguments),
            )
            .await?;
    }
    for b in &plan.retired_bindings {
        channel
            .queue_unbind(
                b.queue.as_str().into(),
                b.exchange.as_str().into(),
                b.routing_key.as_str().into(),
                table(&b.arguments),
            )
            .await?;
    }
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

fn kind_name(kind: &ExchangeKind) -> &'static str {
    match kind {
        ExchangeKind::Direct => "direct",
        ExchangeKind::Fanout => "fanout",
        ExchangeKind::Headers => "headers",
        other => unreachable!("the plan uses direct, fanout and headers exchanges, not {other:?}"),
    }
}

/// The plan in RabbitMQ's definitions format (`rabbitmqctl import_definitions`), for `vhost`.
pub fn definitions(t: &Topology, vhost: &str) -> Value {
    let args = |arguments: &Arguments| -> Value {
        Value::Object(
            arguments
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
                        AMQPValue::LongLongInt(n) => json!(n),
                        other => unreachable!("the plan uses strings and integers only, not {other:?}"),
                    };
                    ((*k).to_owned(), v)
                })
                .collect(),
        )
    };
    let plan = plan(t);
    json!({
        "vhosts": [{"name": vhost}],
        "exchanges": plan.exchanges.iter().map(|e| json!({
            "name": e.name, "vhost": vhost, "type": kind_name(&e.kind), "durable": true, "auto_delete": false,
            "internal": false, "arguments": {},
        })).collect::<Vec<_>>(),
        "queues": plan.queues.iter().map(|q| json!({
            "name": q.name, "vhost": vhost, "durable": true, "auto_delete": false, "arguments": args(&q.arguments),
        })).collect::<Vec<_>>(),
        "bindings": plan.bindings.iter().map(|b| json!({
            "source": b.exchange, "vhost": vhost, "destination": b.queue, "destination_type": "queue",
            "routing_key": b.routing_key, "arguments": args(&b.arguments),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_events_have_routes_of_their_own_that_name_their_kind() {
        assert_eq!(event_route(EventKind::Chat, 2_000), "chat");
        assert_eq!(event_route(EventKind::Offline, LARGE_EVENT_BYTES), "offline");
        assert_eq!(event_route(EventKind::Chat, LARGE_EVENT_BYTES + 1), "chat.large");
        for kind in EventKind::ALL {
            for len in [0, usize::MAX] {
                assert_eq!(kind_of_route(event_route(kind, len)), Some(kind));
            }
        }
        assert_eq!(kind_of_route("large"), None);
    }
}
