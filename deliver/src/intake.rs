//! Consuming `bridge.deliver`: a supervisor keeps a session and a consumer up across broker
//! restarts; each message is checked (poison, envelope, integration, ledger, payload), attributed,
//! mapped and handed to its lane.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bridge_shared::amqp::headers::DeadClass;
use bridge_shared::amqp::session::{self, SessionConfig};
use bridge_shared::amqp::topology::DELIVERY_LIMIT;
use bridge_shared::amqp::Publisher;
use bridge_shared::attribution::attribute;
use bridge_shared::event::{Envelope, EventKind};
use bridge_shared::lifecycle::{panic_message, Shutdown};
use bridge_shared::mapping::{map_event, MappingContext};
use bridge_shared::reload::IntegrationsHandle;
use bridge_shared::verbox;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::watch;

use crate::lanes::Lanes;
use crate::ledger::Ledger;
use crate::outlet::{Outlet, Raw};
use crate::pending::{previous_deliveries, Pending};

pub struct Intake {
    pub integrations: IntegrationsHandle,
    pub ledger: Arc<Ledger>,
    pub outlet: Arc<Outlet>,
    pub lanes: Arc<Lanes>,
}

/// What an unreadable message's routing key says it is (the exchange routes on the kind), so that
/// its dead letter still names `chat` or `offline` and can be replayed after a fix.
fn kind_from_routing_key(delivery: &Delivery) -> Option<&'static str> {
    EventKind::parse(delivery.routing_key.as_str()).map(EventKind::as_str)
}

const CONSUMER_TAG: &str = "verbox-bridge-deliver";

impl Intake {
    /// Settles one message. A panic while doing so (a bug) must not end the consumer, which serves
    /// every tenant: it is caught, and the message is handed back to the broker, which counts the
    /// delivery, so a message that panics every time becomes `poison` after the delivery limit.
    pub async fn take(&self, delivery: Delivery) {
        if delivery.redelivered || previous_deliveries(&delivery) > 0 {
            let kind = kind_from_routing_key(&delivery).unwrap_or("unknown");
            self.outlet.metrics.redeliveries.with_label_values(&[kind]).inc();
        }
        let acker = delivery.acker.clone();
        if let Err(panic) = AssertUnwindSafe(self.settle(delivery)).catch_unwind().await {
            self.outlet.hand_back_after_panic("intake", &[acker], panic_message(&*panic)).await;
        }
    }

    async fn settle(&self, delivery: Delivery) {
        let envelope = Envelope::from_bytes(&delivery.data);
        let deliveries = previous_deliveries(&delivery) + 1;
        if deliveries >= DELIVERY_LIMIT as u64 {
            // Before the broker's own limit drops it into the dead queue without our headers.
            let raw = match &envelope {
                Ok(e) => Raw { integration: Some(&e.integration), kind: Some(e.kind.as_str()) },
                Err(_) => Raw { integration: None, kind: kind_from_routing_key(&delivery) },
            };
            let error = format!("delivered {deliveries} times without an outcome");
            return self.outlet.dead_raw(&delivery, raw, DeadClass::Poison, &error).await;
        }
        let envelope = match envelope {
            Ok(e) => e,
            Err(e) => {
                let raw = Raw { integration: None, kind: kind_from_routing_key(&delivery) };
                let error = format!("not an event envelope: {e}");
                return self.outlet.dead_raw(&delivery, raw, DeadClass::InvalidEvent, &error).await;
            }
        };
        let kind = envelope.kind.as_str();
        let raw = Raw { integration: Some(&envelope.integration), kind: Some(kind) };
        let integrations = self.integrations.current();
        let Some(integration) = integrations.get(&envelope.integration) else {
            let error = format!("no integration `{}` in integrations.toml", envelope.integration);
            return self.outlet.dead_raw(&delivery, raw, DeadClass::InvalidEvent, &error).await;
        };
        if self.ledger.contains(envelope.event_id.as_str()) {
            // Debug, not info: a redelivery storm must not become a log storm (the
            // `duplicate` outcome and `bridge_deliver_redeliveries_total` count them).
            tracing::debug!(integration = %envelope.integration, kind, event_id = %envelope.event_id, "already delivered (ledger); acked");
            return self.outlet.done(&delivery, kind, "duplicate").await;
        }
        let event = match verbox::parse(envelope.payload.get().as_bytes()) {
            Ok(event) => event,
            Err(e) => return self.outlet.dead_raw(&delivery, raw, DeadClass::InvalidEvent, &e.to_string()).await,
        };
        let attribution = attribute(integration, &event);
        let cx = MappingContext {
            integration,
            event_id: &envelope.event_id,
            attribution,
            received_at: envelope.received_at,
            now: chrono::Utc::now(),
        };
        match map_event(envelope.kind, &event, cx) {
            Ok(item) => self.lanes.submit(Pending { delivery, envelope, event, item, rule: attribution.rule }),
            Err(skip) => {
                tracing::info!(integration = %envelope.integration, kind, event_id = %envelope.event_id, reason = skip.as_str(), "skipped: CoMagic cannot take this event");
                self.outlet.done(&delivery, kind, "skipped").await;
            }
        }
    }
}

/// The broker side of deliver, for health and shutdown.
pub struct Consuming {
    pub publisher: watch::Sender<Option<Arc<Publisher>>>,
    pub connected: IntGauge,
    pub connect_failures: IntCounter,
    pub ready: Arc<AtomicBool>,
}

impl Consuming {
    fn set_up(&self, publisher: Option<Publisher>) {
        let up = publisher.is_some();
        self.publisher.send_replace(publisher.map(Arc::new));
        self.connected.set(up.into());
        self.ready.store(up, Ordering::Relaxed);
    }

    /// Consumes until `shutdown`, reconnecting as needed. Returns the live connection at shutdown,
    /// with the consumer cancelled, so the lanes can still ack and move what they hold.
    pub async fn run(
        &self,
        intake: Arc<Intake>,
        config: SessionConfig,
        prefetch: u16,
        shutdown: Shutdown,
    ) -> Option<lapin::Connection> {
        let queue = config.topology.deliver_queue();
        loop {
            let (connection, publisher) = session::establish(&config, &shutdown).await?;
            let started = session::within("start consuming", async {
                let channel = connection.create_channel().await?;
                channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
                let consumer = channel
                    .basic_consume(
                        queue.as_str().into(),
                        CONSUMER_TAG.into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                Ok((channel, consumer))
            })
            .await;
            let (channel, mut consumer) = match started {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(%error, "could not start consuming; reconnecting");
                    self.connect_failures.inc();
                    session::close(&connection, "retry").await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.set_up(Some(publisher));
            tracing::info!(%queue, prefetch, "consuming");
            let mut health = tokio::time::interval(Duration::from_millis(500));
            let stopping = loop {
                tokio::select! {
                    _ = health.tick() => if !connection.status().connected() {
                        tracing::warn!("broker connection lost; reconnecting");
                        break false;
                    },
                    next = consumer.next() => match next {
                        // Each message on its own task: a move that waits out a publish outage
                        // (or one tenant's trouble) must not hold up the consumer. The prefetch
                        // window bounds how many are in hand.
                        Some(Ok(delivery)) => {
                            let intake = intake.clone();
                            tokio::spawn(async move { intake.take(delivery).await });
                        }
                        Some(Err(error)) => {
                            tracing::warn!(%error, "broker connection lost; reconnecting");
                            break false;
                        }
                        None => break false,
                    },
                    _ = shutdown.stopped() => break true,
                }
            };
            if stopping {
                let _ =
                    session::within("cancel", channel.basic_cancel(CONSUMER_TAG.into(), BasicCancelOptions::default()))
                        .await;
                self.ready.store(false, Ordering::Relaxed);
                return Some(connection);
            }
            self.set_up(None);
            // What the lanes still hold from this connection is redelivered; the ledger skips
            // whatever of it they deliver meanwhile.
            session::close(&connection, "reconnect").await;
        }
    }
}
