//! One consumed event on its way to CoMagic: the broker delivery (to ack) and the mapped item.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bridge_shared::amqp::headers::{self, DELIVERY_COUNT, IN_DOUBT, IN_DOUBT_REDELIVERED, QUOTA_WAITED};
use bridge_shared::amqp::topology::RETRY_TIER_HEADER;
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
    /// The Verbox dialog id, which its journey is found by.
    pub dialog_id: Option<String>,
    pub rule: Rule,
    /// A console's test chat: what becomes of it is published to the traces exchange.
    pub test: bool,
    /// Whether, and since when, CoMagic may already have it (see [`doubt_of`]): its report is
    /// asked before it is sent, once no earlier call can still land.
    pub doubt: Option<Doubt>,
    /// It waited for its account's quota window to reset (see [`QUOTA_WAITED`]).
    pub quota_waited: bool,
    /// Its journey may have steps in the store already: handled before (a retry, a park, a
    /// replay, a redelivery), or a step noted in this handling. A delivery of one that has none
    /// writes its journey without reading the store first.
    pub in_journey: AtomicBool,
}

/// Whether a message may have been handled before: the broker delivered it before, or it comes
/// back from a retry queue or a replay, or in doubt.
pub fn handled_before(delivery: &Delivery) -> bool {
    let h = delivery.properties.headers().as_ref();
    let has = |key| h.is_some_and(|h| h.inner().contains_key(key));
    delivered_before(delivery) || [RETRY_TIER_HEADER, headers::REPLAYED_AT, IN_DOUBT].into_iter().any(has)
}

/// How far ahead of the clock a doubt read from a header may start: past the latest a takeover
/// writes (`postgres_timeout`, at most 60 s, plus the replicas' clock skew), short enough that a
/// garbled header cannot park an event for long.
const LATEST_DOUBT: Duration = Duration::from_secs(600);

/// Since when CoMagic may already have an event, and why: which decides what may settle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doubt {
    /// When a call that may land could have started, at the latest.
    pub since: DateTime<Utc>,
    /// Only because the broker delivered it before, no holder having marked it: a ledger that
    /// knows every call settles it by claiming the event clean ([`Pending::settle_redelivery`]).
    pub redelivered_only: bool,
}

impl Doubt {
    /// How long from `now` until `grace` has passed since the doubt arose.
    fn wait(&self, grace: Duration, now: DateTime<Utc>) -> Duration {
        let until = self.since + chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        (until - now).to_std().unwrap_or_default()
    }
}

impl Pending {
    /// The headers it is moved on with; a doubt and a quota wait travel with it.
    pub fn headers(&self) -> FieldTable {
        let keys = [DELIVERY_COUNT, IN_DOUBT, IN_DOUBT_REDELIVERED, QUOTA_WAITED];
        let mut h = headers_without(&self.message.delivery, &keys);
        if let Some(doubt) = self.doubt {
            let since = u64::try_from(doubt.since.timestamp_millis()).unwrap_or(1);
            headers::set_u64(&mut h, IN_DOUBT, since);
            // The mark names the doubt it qualifies: a replica of an older version rewrites
            // IN_DOUBT for a call of its own and carries this header along unchanged, and the
            // mismatch then keeps that call's doubt.
            if doubt.redelivered_only {
                headers::set_u64(&mut h, IN_DOUBT_REDELIVERED, since);
            }
        }
        if self.quota_waited {
            headers::set_u64(&mut h, QUOTA_WAITED, 1);
        }
        h
    }

    pub fn in_doubt(&self) -> bool {
        self.doubt.is_some()
    }

    /// CoMagic may have it from now on (a call that may land): a new doubt starts the grace again,
    /// whenever an earlier one arose.
    pub fn doubt_arises(&mut self) {
        self.doubt = Some(Doubt { since: Utc::now(), redelivered_only: false });
    }

    /// An earlier holder called CoMagic with it, starting no later than `last_call` (a claim taken
    /// over): the doubt runs from then, or from a later one it already had.
    pub fn called_before(&mut self, last_call: DateTime<Utc>) {
        let since = self.doubt.map_or(last_call, |d| d.since.max(last_call));
        self.doubt = Some(Doubt { since, redelivered_only: false });
    }

    /// A ledger that knows every call claimed it: a doubt that was only the broker's redelivery is
    /// settled (had the holder that died called CoMagic, the claim would say so).
    pub fn settle_redelivery(&mut self) {
        if self.doubt.is_some_and(|d| d.redelivered_only) {
            self.doubt = None;
        }
    }

    /// How long until CoMagic's report may be asked about it: zero when it is not in doubt or has
    /// waited `grace` since the doubt arose (a doubt from a later time than `now`, as a takeover's
    /// may be, waits that much longer).
    pub fn doubt_wait(&self, grace: Duration, now: DateTime<Utc>) -> Duration {
        self.doubt.map_or(Duration::ZERO, |doubt| doubt.wait(grace, now))
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

/// Whether, and since when, an upload of this message may already have reached CoMagic: since
/// `now` when the broker delivered it before (the consumer that had it died or stopped, maybe
/// mid-call: whatever an earlier mark says, that call may still land), else as an earlier holder
/// marked it [`IN_DOUBT`] (`now` when the mark names no time). A time from a header is taken only
/// from 2000 on, and at most [`LATEST_DOUBT`] ahead of `now` (a takeover's doubt may start a little
/// ahead: until when the holder it took over from could still start its call). The doubt is only
/// the redelivery's ([`Doubt::redelivered_only`]) unless a holder marked it for a call.
pub fn doubt_of(delivery: &Delivery, now: DateTime<Utc>) -> Option<Doubt> {
    let marked = header(delivery, IN_DOUBT).map(|ms| {
        let floor = DateTime::from_timestamp(946_684_800, 0).unwrap_or(now);
        let latest = now + chrono::Duration::from_std(LATEST_DOUBT).unwrap_or_default();
        let since = i64::try_from(ms).ok().and_then(DateTime::from_timestamp_millis);
        since.filter(|t| *t >= floor).map(|t| t.min(latest))
    });
    let only_redelivered =
        header(delivery, IN_DOUBT_REDELIVERED).is_some_and(|m| Some(m) == header(delivery, IN_DOUBT));
    let marked_for_a_call = marked.is_some() && !only_redelivered;
    if delivered_before(delivery) {
        return Some(Doubt { since: now, redelivered_only: !marked_for_a_call });
    }
    marked.map(|since| Doubt { since: since.unwrap_or(now), redelivered_only: !marked_for_a_call })
}

/// Whether it was parked until its account's quota window reset.
pub fn quota_waited(delivery: &Delivery) -> bool {
    header(delivery, QUOTA_WAITED).is_some()
}

/// Whether the broker delivered this message before (a nack, a lost channel, a consumer that died).
pub fn delivered_before(delivery: &Delivery) -> bool {
    delivery.redelivered || previous_deliveries(delivery) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_doubt_waits_the_grace_from_when_it_arose_even_from_a_time_still_ahead() {
        let now = Utc::now();
        let grace = Duration::from_secs(60);
        let at = |seconds: i64| Doubt { since: now + chrono::Duration::seconds(seconds), redelivered_only: false };
        assert_eq!(at(-20).wait(grace, now), Duration::from_secs(40));
        assert_eq!(at(-600).wait(grace, now), Duration::ZERO, "a call long ago: ask at once");
        assert_eq!(at(5).wait(grace, now), Duration::from_secs(65), "a takeover's call may start until then");
    }
}
