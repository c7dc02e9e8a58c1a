//! The courier on the local ledger, against the CoMagic sandbox, with messages taken from the real
//! broker (their acks are what a test watches). Nothing moves messages on (no publisher): what
//! the courier parks or retries stays unsettled.

use std::sync::Arc;
use std::time::Duration;

use bridge_shared::amqp::Topology;
use bridge_shared::attribution::attribute;
use bridge_shared::comagic::ComagicClient;
use bridge_shared::event::{Envelope, EventId, EventKind, ENVELOPE_SCHEMA};
use bridge_shared::integrations::store::Location;
use bridge_shared::mapping::{map_event, MappingContext};
use bridge_shared::postgres::{Postgres, DEFAULT_TIMEOUT};
use bridge_shared::reload::{IntegrationsHandle, ReloadMetrics};
use bridge_shared::telemetry::{ComagicMetrics, DeliverMetrics};
use bridge_shared::verbox;
use bridge_tests::fixtures::{chat, integration, WEBHOOK_TOKEN};
use bridge_tests::sandbox::{Account, Sandbox, SandboxConfig, Upload};
use bridge_tests::wait_for;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use prometheus::Registry;
use serde_json::json;

use super::*;
use crate::acks::{AckWindow, Acks};
use crate::journey::{Journal, JourneyMetrics};
use crate::ledger::{Ledger, CLAIM_FOR};
use crate::outlet::RetryWarnings;

const TOKEN: &str = "ct-shop-0123456789";

struct Harness {
    courier: Arc<Courier>,
    sandbox: Sandbox,
    channel: lapin::Channel,
    window: Arc<AckWindow>,
    queue: String,
    /// The one call slot, taken until [`Harness::free_slot`].
    slot: std::sync::Mutex<Option<Slot>>,
    _dir: tempfile::TempDir,
    _connection: lapin::Connection,
}

impl Harness {
    /// A courier with no free call slot (a test frees its one) and a grace of 10 s for events in doubt.
    async fn start() -> Harness {
        let sandbox = Sandbox::start(SandboxConfig { account: vec![Account::sample("shop", TOKEN)] }).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("integrations.toml");
        std::fs::write(&toml, integration("shop", WEBHOOK_TOKEN, sandbox.url(), TOKEN, "")).unwrap();
        let registry = Registry::new();
        let postgres = Postgres::new(DEFAULT_TIMEOUT);
        let location = Location::File(toml);
        let integrations = IntegrationsHandle::open(&location, ReloadMetrics::new(&registry), &postgres).await.unwrap();
        let metrics = DeliverMetrics::new(&registry);
        let outlet = Arc::new(Outlet {
            publisher: tokio::sync::watch::channel(None).1,
            topology: Topology::new("courier-tests"),
            ledger: Arc::new(Ledger::open(&dir.path().join("ledger")).unwrap()),
            metrics: metrics.clone(),
            acks: Acks::new(metrics.ack_frames.clone()),
            retry_for: Duration::from_secs(3600),
            park_for: Duration::from_secs(3600),
            move_warnings: RetryWarnings::default(),
            journal: Arc::new(
                Journal::new(None, "courier-tests", JourneyMetrics::new(&registry), integrations.clone()).0,
            ),
        });
        let courier = Arc::new(Courier {
            client: ComagicClient::new(Duration::from_secs(10), ComagicMetrics::new(&registry)),
            calls: Slots::new(1),
            integrations,
            tenants: Tenants::new((Duration::from_secs(1), Duration::from_secs(2)), metrics),
            outlet,
            doubt_grace: Duration::from_secs(10),
            panics: Panics::default(),
        });
        let connection =
            bridge_shared::amqp::connect(&bridge_tests::broker::amqp_url(), "courier tests").await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let queue = channel.queue_declare("".into(), options, FieldTable::default()).await.unwrap().name().to_string();
        let window = courier.outlet.acks.open(channel.clone(), 100);
        let slot = std::sync::Mutex::new(Some(courier.calls.acquire().await.unwrap()));
        Harness { courier, sandbox, channel, window, queue, slot, _dir: dir, _connection: connection }
    }

    /// Gives the call slot back: a batch waiting for one goes on.
    fn free_slot(&self) {
        self.slot.lock().unwrap().take();
    }

    /// Chat `dialog` of `shop` as the courier gets it: its message taken from the broker, mapped.
    async fn pending(&self, dialog: u64) -> Pending {
        let raw = chat(dialog, json!({})).to_string();
        let now = chrono::Utc::now();
        let event = verbox::parse_at(raw.as_bytes(), now).unwrap();
        let event_id = EventId::derive("shop", EventKind::Chat, &event, raw.as_bytes());
        let payload = serde_json::value::RawValue::from_string(raw).unwrap();
        let kind = EventKind::Chat;
        let envelope = Envelope {
            schema: ENVELOPE_SCHEMA,
            event_id,
            integration: "shop".into(),
            kind,
            received_at: now,
            accepted_by: None,
            payload,
        };
        let (publish, properties) = (BasicPublishOptions::default(), BasicProperties::default());
        let queue = self.queue.as_str().into();
        self.channel.basic_publish("".into(), queue, publish, &envelope.to_bytes(), properties).await.unwrap();
        let got = wait_for("the message on the broker", Duration::from_secs(10), || async {
            self.channel.basic_get(self.queue.as_str().into(), BasicGetOptions::default()).await.unwrap()
        })
        .await;
        let integrations = self.courier.integrations.current();
        let integration = integrations.get("shop").unwrap();
        let attribution = attribute(integration, &event);
        let cx = MappingContext { integration, event_id: &envelope.event_id, attribution, received_at: now, now };
        let item = map_event(kind, &event, cx).unwrap();
        let envelope = Envelope { payload: Envelope::no_payload(), ..envelope };
        let message = self.window.track(got.delivery);
        Pending {
            message,
            envelope,
            event: None,
            item,
            dialog_id: Some(dialog.to_string()),
            rule: attribution.rule,
            test: false,
            doubt: None,
            quota_waited: false,
            in_journey: Default::default(),
        }
    }

    /// Hands `p` to the courier on a task of its own.
    fn deliver(&self, p: Pending) -> tokio::task::JoinHandle<()> {
        let courier = self.courier.clone();
        tokio::spawn(async move { courier.deliver("shop", EventKind::Chat, vec![p]).await })
    }

    async fn wait_claimed(&self, ext_id: &str) {
        let ledger = &self.courier.outlet.ledger;
        wait_for("the batch's claim", Duration::from_secs(10), || async { ledger.claimed_now(ext_id).then_some(()) })
            .await;
    }
}

#[tokio::test]
async fn a_batch_whose_claim_lapsed_and_was_taken_by_a_copy_while_it_waited_for_a_call_slot_is_not_sent() {
    let h = Harness::start().await;
    let (first, copy) = (h.pending(1).await, h.pending(1).await);
    let ext_id = first.item.ext_id().to_owned();
    let (first_ticket, copy_ticket) = (first.message.ticket.clone(), copy.message.ticket.clone());
    let waiting = h.deliver(first);
    h.wait_claimed(&ext_id).await;
    // It waits for a call slot (none is free) longer than a claim holds.
    tokio::time::pause();
    tokio::time::advance(CLAIM_FOR + Duration::from_secs(1)).await;
    tokio::time::resume();
    assert!(!h.courier.outlet.ledger.claimed_now(&ext_id), "the claim lapsed");
    let copying = h.deliver(copy);
    h.wait_claimed(&ext_id).await;
    h.free_slot();
    for batch in [waiting, copying] {
        tokio::time::timeout(Duration::from_secs(30), batch).await.expect("the batch is settled").unwrap();
    }
    let uploads: Vec<_> = h.sandbox.calls().into_iter().filter(|c| c.method.starts_with("upload.")).collect();
    assert_eq!(uploads.len(), 1, "one upload, by the copy: {uploads:?}");
    assert_eq!(h.sandbox.stored("shop", Upload::Chats).len(), 1);
    assert!(first_ticket.unsettled(), "the batch that lost its claim sent nothing, and waits to meet the ledger");
    wait_for("the copy acked once delivered", Duration::from_secs(5), || async {
        (!copy_ticket.unsettled()).then_some(())
    })
    .await;
    // The copy was claimed clean: the batch that lost the claim never called with it.
    assert!(h.sandbox.calls().iter().all(|c| c.method != "get.chats_report"), "no report asked");
}

#[tokio::test]
async fn an_event_delivered_whose_record_failed_is_released_for_the_next_holder_to_ask_about() {
    use crate::ledger::Claim;
    let h = Harness::start().await;
    let (delivered, other) = (h.pending(1).await, h.pending(2).await);
    let ids = [delivered.item.ext_id().to_owned(), other.item.ext_id().to_owned()];
    let ledger = &h.courier.outlet.ledger;
    let hold = ledger.hold();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert!(matches!(ledger.claim(hold, &refs).await[..], [Claim::Mine, Claim::Mine]));
    ledger.renew(hold, &refs, &refs).await;
    // The first was delivered, and its record failed (nothing recorded); the second was not.
    let mut s = super::Sending::new(hold, Vec::new());
    s.delivered_now(&[delivered]);
    ledger.release(hold, &ids, &s.may_be_there).await;
    let next = ledger.hold();
    let claims = ledger.claim(next, &refs).await;
    assert!(matches!(claims[0], Claim::TakenOver { .. }), "asked about first: {:?}", claims[0]);
    assert!(matches!(claims[1], Claim::Mine), "never delivered, forgotten: {:?}", claims[1]);
}
