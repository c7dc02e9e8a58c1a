//! Consuming `bridge.deliver`: a supervisor keeps a session and a consumer up across broker
//! restarts; each message is checked (poison, envelope, integration, payload), attributed, mapped
//! and handed to its lane; the courier's claim in the ledger catches a copy of a delivered event
//! (one round trip per batch, not per message: with the shared ledger that is the difference).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bridge_shared::amqp::headers::{self, DeadClass};
use bridge_shared::amqp::session::{self, SessionConfig};
use bridge_shared::amqp::topology::{kind_of_route, DELIVERY_LIMIT, LARGE_EVENT_BYTES, RETRY_TIER_HEADER};
use bridge_shared::amqp::{BrokerLink, Ended};
use bridge_shared::attribution::{attribute, Rule};
use bridge_shared::event::{Envelope, EventKind};
use bridge_shared::lifecycle::{panic_message, Shutdown};
use bridge_shared::mapping::{contact, map_event, MappingContext};
use bridge_shared::reload::IntegrationsHandle;
use bridge_shared::trace::Trace;
use bridge_shared::verbox;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use prometheus::IntCounter;
use tokio::task::JoinSet;

use crate::acks::Message;
use crate::journey::Facts;
use crate::lanes::Lanes;
use crate::outlet::{Outlet, Raw};
use crate::pending::{delivered_before, doubt_of, handled_before, previous_deliveries, quota_waited, Pending};

pub struct Intake {
    /// Which integration an envelope names, and its settings.
    pub integrations: IntegrationsHandle,
    /// Where a message that cannot go on (unreadable, skipped, poison) ends.
    pub outlet: Arc<Outlet>,
    /// Where a mapped event goes to be batched with its tenant's others.
    pub lanes: Arc<Lanes>,
}

/// What an unreadable message's routing key says it is (the exchange routes on the kind), so that
/// its dead letter still names `chat` or `offline` and can be replayed after a fix.
fn kind_from_routing_key(delivery: &Delivery) -> Option<&'static str> {
    kind_of_route(delivery.routing_key.as_str()).map(EventKind::as_str)
}

/// How long a stopping consumer may take what the broker sent before the cancel.
const TAKE_THE_REST_FOR: Duration = Duration::from_secs(10);

/// Consumer tags of the two event queues.
const CONSUMER_TAG: &str = "verbox-bridge-deliver";
const LARGE_CONSUMER_TAG: &str = "verbox-bridge-deliver-large";

/// How many unacked messages each event queue may hand deliver: a deep window for the small events,
/// a shallow one for the large (see `amqp::topology`), so that what is in hand stays within
/// `[deliver] prefetch_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub small: u16,
    pub large: u16,
}

impl Windows {
    /// Half of `budget` bytes for each queue: small events are at most `LARGE_EVENT_BYTES`, large
    /// ones at most `largest` (ingest's body limit plus the envelope); `prefetch` caps both.
    pub fn within(budget: u64, largest: u64, prefetch: u16) -> Windows {
        let count = |per: u64| u16::try_from((budget / 2) / per.max(1)).unwrap_or(u16::MAX).clamp(1, prefetch);
        Windows { small: count(LARGE_EVENT_BYTES as u64), large: count(largest) }
    }
}

impl Intake {
    /// Settles one message. A panic while doing so (a bug) must not end the consumer, which serves
    /// every tenant: it is caught, and the message is handed back to the broker, which counts the
    /// delivery, so a message that panics every time becomes `poison` after the delivery limit.
    pub async fn take(&self, message: Message) {
        if delivered_before(&message.delivery) {
            let kind = kind_from_routing_key(&message.delivery).unwrap_or("unknown");
            self.outlet.metrics.redeliveries.with_label_values(&[kind]).inc();
        }
        let ticket = message.ticket.clone();
        if let Err(panic) = AssertUnwindSafe(self.settle(message)).catch_unwind().await {
            self.outlet.hand_back_after_panic("intake", &[ticket], panic_message(&*panic)).await;
        }
    }

    async fn settle(&self, message: Message) {
        let taken = std::time::Instant::now();
        let delivery = &message.delivery;
        let envelope = Envelope::from_bytes(&delivery.data);
        let deliveries = previous_deliveries(delivery) + 1;
        if deliveries >= DELIVERY_LIMIT as u64 {
            // Before the broker's own limit drops it into the dead queue without our headers.
            let raw = match &envelope {
                Ok(e) => Raw { integration: Some(&e.integration), kind: Some(e.kind.as_str()) },
                Err(_) => Raw { integration: None, kind: kind_from_routing_key(delivery) },
            };
            let error = format!("delivered {deliveries} times without an outcome");
            return self.outlet.dead_raw(&message, raw, DeadClass::Poison, &error).await;
        }
        let envelope = match envelope {
            Ok(e) => e,
            Err(e) => {
                let raw = Raw { integration: None, kind: kind_from_routing_key(delivery) };
                let error = format!("not an event envelope: {e}");
                return self.outlet.dead_raw(&message, raw, DeadClass::InvalidEvent, &error).await;
            }
        };
        let kind = envelope.kind.as_str();
        let raw = Raw { integration: Some(&envelope.integration), kind: Some(kind) };
        let mut integrations = self.integrations.current();
        let id = envelope.integration.as_str();
        if integrations.get(id).is_none() && integrations.refused_outright(id).is_none() {
            // Created a moment ago, perhaps: ingest's watcher may have read the store before ours.
            integrations = self.integrations.current_after(taken).await;
        }
        if integrations.refused_outright(id).is_some() {
            return self.outlet.park_refused(&message, raw).await;
        }
        let Some(integration) = integrations.get(id) else {
            let error = format!("no integration `{}` in the integrations store", envelope.integration);
            return self.outlet.dead_raw(&message, raw, DeadClass::InvalidEvent, &error).await;
        };
        let event = match verbox::parse_at(envelope.payload.get().as_bytes(), envelope.received_at) {
            Ok(event) => event,
            Err(e) => return self.outlet.dead_raw(&message, raw, DeadClass::InvalidEvent, &e.to_string()).await,
        };
        let attribution = attribute(integration, &event);
        let cx = MappingContext {
            integration,
            event_id: &envelope.event_id,
            attribution,
            received_at: envelope.received_at,
            now: chrono::Utc::now(),
        };
        let replayed = replayed_at(delivery);
        match map_event(envelope.kind, &event, cx) {
            Ok(item) => {
                // What is in hand is as large as the dialog, several times over: keep the raw
                // message (to move it) and the item; the parsed event only while a refused session
                // may need it mapped again; the envelope's copy of the payload not at all.
                let rule = attribution.rule;
                let test = bridge_shared::trace::is_test(&event);
                let dialog_id = event.dialog_id.as_deref().and_then(crate::journey::query::bounded);
                let event = (rule == Rule::Session).then_some(event);
                let envelope = Envelope { payload: Envelope::no_payload(), ..envelope };
                let (doubt, quota_waited) = (doubt_of(delivery, chrono::Utc::now()), quota_waited(delivery));
                let in_journey = AtomicBool::new(handled_before(delivery));
                let p =
                    Pending { message, envelope, event, item, dialog_id, rule, test, doubt, quota_waited, in_journey };
                if let Some(at) = replayed {
                    self.outlet.trace(&p, "replayed", |t| Trace { at, ..t }).await;
                }
                self.lanes.submit(p)
            }
            Err(skip) => {
                if deliveries == 1 && !delivery.redelivered {
                    tracing::info!(integration = %envelope.integration, kind, event_id = %envelope.event_id, reason = skip.as_str(), "skipped: CoMagic cannot take this event");
                }
                let phone = event.client.phone.as_deref().and_then(contact::normalize_phone);
                let email = event.client.email.as_deref().and_then(contact::normalize_email);
                let dialog_id = event.dialog_id.as_deref().and_then(crate::journey::query::bounded);
                let (phone, email, dialog_id) = (phone.as_deref(), email.as_deref(), dialog_id.as_deref());
                let facts = Facts { envelope: &envelope, dialog_id, phone, email, item: None };
                self.outlet.skipped(&message.ticket, &facts, skip.as_str(), replayed).await;
            }
        }
    }
}

/// When an operator replayed this message, if this is its first handling since (a replay's
/// headers have no retry tier and the broker has not delivered it before).
fn replayed_at(delivery: &Delivery) -> Option<chrono::DateTime<chrono::Utc>> {
    let h = delivery.properties.headers().as_ref()?;
    if headers::get_str(h, RETRY_TIER_HEADER).is_some() || delivery.redelivered || previous_deliveries(delivery) > 0 {
        return None;
    }
    let at = chrono::DateTime::parse_from_rfc3339(&headers::get_str(h, headers::REPLAYED_AT)?).ok()?;
    Some(at.with_timezone(&chrono::Utc))
}

/// The broker side of deliver: the shared [`BrokerLink`] keeps a session on some node; on each one
/// this consumes both event queues until the session ends or the process stops.
pub struct Consuming {
    pub link: Arc<BrokerLink>,
    pub connect_failures: IntCounter,
    /// `/readyz`: true while the consumers run.
    pub ready: Arc<AtomicBool>,
}

/// Ready while it lives: dropped when a session's consumers end for any reason (the supervisor
/// drops the consuming future when the connection is lost).
struct ReadyWhileConsuming(Arc<AtomicBool>);

impl ReadyWhileConsuming {
    fn set(ready: &Arc<AtomicBool>) -> Self {
        ready.store(true, Ordering::Relaxed);
        ReadyWhileConsuming(ready.clone())
    }
}

impl Drop for ReadyWhileConsuming {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

impl Consuming {
    /// Consumes until `shutdown`, reconnecting (to the next node) as needed. Returns the live
    /// connection at shutdown, with the consumers cancelled, so the lanes can still ack and move
    /// what they hold; the caller closes it through the link.
    pub async fn run(
        self,
        intake: Arc<Intake>,
        config: SessionConfig,
        windows: Windows,
        shutdown: Shutdown,
    ) -> Option<Arc<Connection>> {
        let queues = vec![
            (config.topology.deliver_queue(), CONSUMER_TAG, windows.small),
            (config.topology.large_deliver_queue(), LARGE_CONSUMER_TAG, windows.large),
        ];
        let stop = shutdown.clone();
        let serve = move |connection: Arc<Connection>| {
            let (intake, queues, stop) = (intake.clone(), queues.clone(), stop.clone());
            let (ready, failures) = (self.ready.clone(), self.connect_failures.clone());
            async move { consume(&connection, intake, &queues, stop, &ready, &failures).await }
        };
        self.link.clone().supervise(config, shutdown, serve).await
    }
}

/// One session's consumers, until they end (reconnect) or `shutdown` (cancelled, connection kept).
async fn consume(
    connection: &Connection,
    intake: Arc<Intake>,
    queues: &[(String, &'static str, u16)],
    shutdown: Shutdown,
    ready: &Arc<AtomicBool>,
    connect_failures: &IntCounter,
) -> Ended {
    let started = session::within("start consuming", async {
        let mut channels = Vec::new();
        let mut consumers = Vec::new();
        // A channel for each queue, with its own prefetch and its own ack window: coalesced acks
        // rely on a channel's delivery tags reaching the window in order, from one consumer.
        for (queue, tag, window) in queues {
            let channel = connection.create_channel().await?;
            channel.basic_qos(*window, BasicQosOptions::default()).await?;
            let options = BasicConsumeOptions::default();
            let consumer =
                channel.basic_consume(queue.as_str().into(), (*tag).into(), options, FieldTable::default()).await?;
            let acks = intake.outlet.acks.open(channel.clone(), *window);
            consumers.push(consumer.map(move |delivery| delivery.map(|d| acks.track(d))).boxed());
            channels.push((channel, *tag));
        }
        Ok((channels, futures_util::stream::select_all(consumers)))
    })
    .await;
    let (channels, mut consumer) = match started {
        Ok(c) => c,
        Err(error) => {
            tracing::warn!(%error, "could not start consuming; reconnecting");
            connect_failures.inc();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => return Ended::Lost,
                _ = shutdown.stopped() => return Ended::Stopping,
            }
        }
    };
    let _ready = ReadyWhileConsuming::set(ready);
    let windows: Vec<u16> = queues.iter().map(|(_, _, window)| *window).collect();
    tracing::info!(?windows, "consuming");
    let mut taking = JoinSet::new();
    loop {
        tokio::select! {
            next = consumer.next() => match next {
                Some(Ok(message)) => take_on_its_own_task(&mut taking, &intake, message),
                Some(Err(error)) => {
                    tracing::warn!(%error, "consumer ended; reconnecting");
                    taking.detach_all();
                    return Ended::Lost;
                }
                None => {
                    taking.detach_all();
                    return Ended::Lost;
                }
            },
            Some(_) = taking.join_next(), if !taking.is_empty() => {}
            _ = shutdown.stopped() => break,
        }
    }
    for (channel, tag) in &channels {
        let cancel = channel.basic_cancel((*tag).into(), BasicCancelOptions::default());
        let _ = session::within("cancel", cancel).await;
    }
    // What the broker sent before the cancel is taken like the rest, and handed to the lanes
    // before they close: left to come back with the connection's close, it would be redelivered,
    // in doubt, and cost its next holder a report call per batch.
    let take_the_rest = async {
        while let Some(Ok(message)) = consumer.next().await {
            take_on_its_own_task(&mut taking, &intake, message);
        }
        while taking.join_next().await.is_some() {}
    };
    if tokio::time::timeout(TAKE_THE_REST_FOR, take_the_rest).await.is_err() {
        tracing::warn!(
            "messages received before the consumers were cancelled are still being taken; the broker redelivers them"
        );
    }
    Ended::Stopping
}

/// Each message on its own task: a move that waits out a publish outage (or one tenant's trouble)
/// must not hold up the consumer. The prefetch window bounds how many are in hand.
fn take_on_its_own_task(taking: &mut JoinSet<()>, intake: &Arc<Intake>, message: Message) {
    let intake = intake.clone();
    taking.spawn(async move { intake.take(message).await });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_budget_sets_a_deep_window_for_small_events_and_a_shallow_one_for_large() {
        let mib = 1 << 20;
        assert_eq!(Windows::within(64 * mib, mib, 2000), Windows { small: 2000, large: 32 });
        assert_eq!(Windows::within(48 * mib, mib, 2000), Windows { small: 1536, large: 24 });
        assert_eq!(Windows::within(8 * mib, mib, 2000), Windows { small: 256, large: 4 });
        assert_eq!(Windows::within(mib, 64 * mib, 2000), Windows { small: 32, large: 1 }, "never zero");
        assert_eq!(Windows::within(u64::MAX, 1, 300), Windows { small: 300, large: 300 }, "prefetch caps both");
    }
}
