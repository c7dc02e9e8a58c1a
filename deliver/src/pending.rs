//! One consumed event on its way to CoMagic: the broker delivery (to ack) and the mapped item.

use std::time::Duration;

use bridge_shared::amqp::headers::{self, DELIVERY_COUNT, IN_DOUBT, QUOTA_WAITED};
use bridge_shared::attribution::{self, Rule};
use bridge_shared::event::{Envelope, EventKind};
use bridge_shared::integrations::Integration;
use bridge_shared::mapping::{self, Item, MappingContext};
use bridge_shared::verbox::VerboxEvent;
use chrono::{DateTime, Utc};
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
    /// Since when CoMagic may already have it (see [`doubt_of`]): its report is asked before it
    /// is sent, once no earlier call can still land.
    pub doubt: Option<DateTime<Utc>>,
    /// It waited for its account's quota window to reset (see [`QUOTA_WAITED`]).
    pub quota_waited: bool,
}

impl Pending {
    /// The headers it is moved on with; a doubt and a quota wait travel with it.
    pub fn headers(&self) -> FieldTable {
        let mut h = headers_without(&self.message.delivery, &[DELIVERY_COUNT, IN_DOUBT, QUOTA_WAITED]);
        if let Some(since) = self.doubt {
            headers::set_u64(&mut h, IN_DOUBT, u64::try_from(since.timestamp_millis()).unwrap_or(1));
        }
        if self.quota_waited {
            headers::set_u64(&mut h, QUOTA_WAITED, 1);
        }
        h
    }

    pub fn in_doubt(&self) -> bool {
        self.doubt.is_some()
    }

    /// CoMagic may have it from now on: a new doubt (a call that may land, a copy met in flight)
    /// starts the grace again, whenever an earlier one arose.
    pub fn doubt_arises(&mut self) {
        self.doubt = Some(Utc::now());
    }

    /// How long until CoMagic's report may be asked about it: zero when it is not in doubt or has
    /// waited `grace` since the doubt arose.
    pub fn doubt_wait(&self, grace: Duration, now: DateTime<Utc>) -> Duration {
        let Some(since) = self.doubt else { return Duration::ZERO };
        let waited = (now - since).to_std().unwrap_or_default();
        grace.saturating_sub(waited)
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
    headers_without(delivery, &[DELIVERY_COUNT])
}

fn headers_without(delivery: &Delivery, keys: &[&str]) -> FieldTable {
    let mut h = delivery.properties.headers().as_ref().map(|h| h.inner().clone()).unwrap_or_default();
    for key in keys {
        h.remove(*key);
    }
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

/// Since when an upload of this message may already have reached CoMagic: `now` when the broker
/// delivered it before (the consumer that had it died or stopped, maybe mid-call: whatever an
/// earlier mark says, that call may still land), else as an earlier holder marked it
/// [`IN_DOUBT`] (`now` when the mark names no time). A time from a header is taken only between
/// 2000 and `now`.
pub fn doubt_of(delivery: &Delivery, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if delivered_before(delivery) {
        return Some(now);
    }
    let marked = header(delivery, IN_DOUBT).map(|ms| {
        let floor = DateTime::from_timestamp(946_684_800, 0).unwrap_or(now);
        i64::try_from(ms).ok().and_then(DateTime::from_timestamp_millis).filter(|t| *t >= floor && *t <= now)
    });
    marked.map(|since| since.unwrap_or(now))
}

/// Whether it was parked until its account's quota window reset.
pub fn quota_waited(delivery: &Delivery) -> bool {
    header(delivery, QUOTA_WAITED).is_some()
}

/// Whether the broker delivered this message before (a nack, a lost channel, a consumer that died).
pub fn delivered_before(delivery: &Delivery) -> bool {
    delivery.redelivered || previous_deliveries(delivery) > 0
}
