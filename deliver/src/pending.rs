//! One consumed event on its way to CoMagic: the broker delivery (to ack) and the mapped item.

use bridge_shared::amqp::headers::{self, DELIVERY_COUNT, IN_DOUBT};
use bridge_shared::attribution::{self, Rule};
use bridge_shared::event::{Envelope, EventKind};
use bridge_shared::integrations::Integration;
use bridge_shared::mapping::{self, Item, MappingContext};
use bridge_shared::verbox::VerboxEvent;
use lapin::message::Delivery;
use lapin::types::FieldTable;

use crate::acks::Message;

pub struct Pending {
    pub message: Message,
    pub envelope: Envelope,
    /// The parsed webhook, kept only while a fallback from a refused session may need to map it
    /// again (rule `session`): it is as large as the dialog.
    pub event: Option<VerboxEvent>,
    pub item: Item,
    pub rule: Rule,
    /// A console's test chat: what becomes of it is published to the traces exchange.
    pub test: bool,
    /// CoMagic may already have it (see [`in_doubt`]): asked before it is sent.
    pub in_doubt: bool,
}

impl Pending {
    /// The headers it is moved on with; a doubt travels with it.
    pub fn headers(&self) -> FieldTable {
        let mut h = headers_of(&self.message.delivery);
        if self.in_doubt {
            headers::set_u64(&mut h, IN_DOUBT, 1);
        }
        h
    }

    pub fn kind(&self) -> EventKind {
        self.envelope.kind
    }

    /// CoMagic refused this item's session: map it again with rule 2/3. `false` when the item had no
    /// session or was already re-sent that way (then it is a real rejection).
    pub fn fall_back_from_session(&mut self, integration: &Integration) -> bool {
        let Some(event) = self.event.as_ref().filter(|_| self.rule == Rule::Session) else {
            return false;
        };
        let attribution = attribution::without_session(integration, event, true);
        let cx = MappingContext {
            integration,
            event_id: &self.envelope.event_id,
            attribution,
            received_at: self.envelope.received_at,
            now: chrono::Utc::now(),
        };
        match mapping::map_event(self.kind(), event, cx) {
            Ok(item) => {
                self.item = item;
                self.rule = attribution.rule;
                true
            }
            Err(_) => false,
        }
    }
}

/// The headers a message is moved on with. The broker's own delivery count stays behind: it counts
/// deliveries from one queue, and a copy that kept it would look like poison when it comes back.
pub fn headers_of(delivery: &Delivery) -> FieldTable {
    let mut h = delivery.properties.headers().clone().unwrap_or_default().inner().clone();
    h.remove(DELIVERY_COUNT);
    FieldTable::from(h)
}

/// How often the broker delivered this message before (quorum queues count it).
pub fn previous_deliveries(delivery: &Delivery) -> u64 {
    header(delivery, DELIVERY_COUNT).unwrap_or(0)
}

/// A numeric header of the message, read in place (this runs for every message).
fn header(delivery: &Delivery, key: &str) -> Option<u64> {
    delivery.properties.headers().as_ref().and_then(|h| headers::get_u64(h, key))
}

/// Whether an upload of this message may already have reached CoMagic: the broker delivered it
/// before (the consumer that had it died or stopped, maybe after CoMagic answered and before the
/// ack), or an earlier holder marked it [`IN_DOUBT`].
pub fn in_doubt(delivery: &Delivery) -> bool {
    delivered_before(delivery) || header(delivery, IN_DOUBT).is_some()
}

/// Whether the broker delivered this message before (a nack, a lost channel, a consumer that died).
pub fn delivered_before(delivery: &Delivery) -> bool {
    delivery.redelivered || previous_deliveries(delivery) > 0
}
