//! What the journey keeps of one event, and the one rule that folds steps into it: both stores
//! merge with [`Journey::push`], so they cannot disagree on how an event ended.

use std::sync::Arc;

use bridge_shared::mapping::contact::{mask_email, mask_phone, normalize_email, normalize_phone};
use bridge_shared::mapping::Item;
use bridge_shared::redact::{cut, for_operators};
use bridge_shared::trace::Trace;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use bridge_shared::event::Envelope;

use crate::pending::Pending;

/// A value that may be looked up: at most 200 characters, no control characters.
pub fn bounded(text: &str) -> Option<String> {
    (text.chars().count() <= 200 && !text.chars().any(char::is_control)).then(|| text.to_owned())
}

/// Steps kept per event: the first ones (how it started) and the newest (how it is going); an
/// event retried for days would otherwise grow without bound.
pub const STEPS_KEPT: usize = 60;

/// What is known of the event from its first step on (later steps do not change it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub event_id: String,
    pub integration: String,
    pub kind: String,
    /// When ingest accepted it, and which ingest replica.
    pub accepted_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialog_id: Option<String>,
    /// The visitor's phone and e-mail, masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// The item as it was (or would be) sent: contacts masked, chat messages counted, not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<serde_json::Value>,
    /// Its lookup keys ([`Keys`]): kept to find it and to prune its index, never shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lookups: Vec<String>,
    /// A skipped event's envelope (at most [`WEBHOOK_KEPT_AT_MOST`] bytes), to send it again; never
    /// shown (it holds the webhook as Verbox sent it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// A skipped event's envelope is kept up to this size.
pub const WEBHOOK_KEPT_AT_MOST: usize = 16 << 10;

/// One event's journey, newest step last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journey {
    #[serde(flatten)]
    pub summary: Summary,
    /// `delivered`, `dead_lettered`, or none while it is on its way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// The newest step's outcome.
    pub last: String,
    /// Whether it may be sent again (dead-lettered, or skipped with its webhook kept): set when it
    /// is shown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub can_send_again: bool,
    /// Steps left out between the first and the newest (see [`STEPS_KEPT`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub steps_dropped: u64,
    pub steps: Vec<Trace>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Outcomes that end a journey.
pub const DELIVERED: &str = "delivered";
pub const DEAD_LETTERED: &str = "dead_lettered";
pub const SKIPPED: &str = "skipped";
pub const REPLAYED: &str = "replayed";

/// Outcomes that say an event waits on purpose (a paused or refused integration, a spent quota)
/// or is done with (skipped: CoMagic cannot take it): not "lost in the middle".
pub const NOT_LOST: [&str; 4] = ["paused", "waiting_for_quota", "not_applied", SKIPPED];

impl Journey {
    pub fn new(summary: Summary) -> Self {
        Journey { summary, end: None, last: String::new(), can_send_again: false, steps_dropped: 0, steps: Vec::new() }
    }

    /// Adds a step where its time puts it: steps reach the store in the order they are written,
    /// not taken (a `delivered` step goes with the ledger's write, the others through the writer
    /// task, or from another replica). A second `delivered` is not kept (the ledger delivers once;
    /// a crash between the two writes of the local store may repeat the step, never the delivery);
    /// once delivered, a journey stays delivered, and a dead letter's replay ends again when its
    /// copy does.
    pub fn push(&mut self, mut step: Trace) {
        // The summary names the event.
        (step.event_id, step.integration) = (String::new(), String::new());
        if step.outcome == DELIVERED && self.end.as_deref() == Some(DELIVERED) {
            return;
        }
        match step.outcome.as_str() {
            DELIVERED => self.end = Some(DELIVERED.to_owned()),
            DEAD_LETTERED if self.end.as_deref() != Some(DELIVERED) => self.end = Some(DEAD_LETTERED.to_owned()),
            // Its letter is out of the dead-letter queue: on its way again.
            REPLAYED if self.end.as_deref() == Some(DEAD_LETTERED) => self.end = None,
            _ => {}
        }
        let at = self.steps.partition_point(|s| s.at <= step.at);
        self.steps.insert(at, step);
        if self.steps.len() > STEPS_KEPT {
            self.steps.remove(STEPS_KEPT / 3);
            self.steps_dropped += 1;
        }
        self.last = self.steps.last().map(|s| s.outcome.clone()).unwrap_or_default();
    }

    /// As a reader is shown it: without its lookup keys and kept webhook, saying whether it may be
    /// sent again.
    pub fn hide_private(&mut self) {
        // The shared store appends a `delivered` step in SQL, after any step already there.
        self.steps.sort_by_key(|s| s.at);
        self.last = self.steps.last().map(|s| s.outcome.clone()).unwrap_or_default();
        // Again on a journey shown already (the socket's, then the reader's), it keeps its answer.
        self.can_send_again |= self.dead_lettered_now() || self.skipped_and_kept();
        self.summary.lookups = Vec::new();
        self.summary.webhook = None;
    }

    /// Dead-lettered, and not replayed since (its letter is in the dead-letter queue).
    pub fn dead_lettered_now(&self) -> bool {
        self.end.as_deref() == Some(DEAD_LETTERED) && self.last == DEAD_LETTERED
    }

    /// Skipped as its newest step, never delivered, its webhook kept.
    pub fn skipped_and_kept(&self) -> bool {
        self.last == SKIPPED && self.end.is_none() && self.summary.webhook.is_some()
    }

    /// Whether it has been on its way since before `cutoff`, not waiting on purpose.
    pub fn lost_since(&self, cutoff: DateTime<Utc>) -> bool {
        self.end.is_none() && self.summary.accepted_at < cutoff && !NOT_LOST.contains(&self.last.as_str())
    }
}

/// One step of one event, with what its journey starts from should it be the first.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Shared by every step of one handling.
    pub summary: Arc<Summary>,
    pub step: Trace,
    /// No step of its event can be in the store yet (see `Pending::in_journey`): a delivery
    /// writes its journey without reading the store first.
    pub fresh: bool,
}

/// The keyed hash of contacts: a journey is found by a visitor's phone or e-mail without either
/// being stored in the clear. The key is the store's own, made once.
#[derive(Clone)]
pub struct Keys {
    key: Arc<[u8]>,
}

/// A lookup key's kind, as its first letter.
const DIALOG: char = 'd';
const CONTACT: char = 'c';

impl Keys {
    pub fn new(key: &[u8]) -> Self {
        Keys { key: key.into() }
    }

    /// The lookup key of a phone or e-mail as anyone may type it; `None` when it is neither.
    pub fn contact(&self, raw: &str) -> Option<String> {
        let normal = normalize_email(raw).or_else(|| normalize_phone(raw))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(normal.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Some(format!("{CONTACT}:{hex}"))
    }

    pub fn dialog(dialog_id: &str) -> String {
        format!("{DIALOG}:{}", cut(dialog_id, 200))
    }
}

fn item_contact(item: &Item) -> &bridge_shared::mapping::Contact {
    match item {
        Item::Chat(c) => &c.contact,
        Item::Offline(o) => &o.contact,
    }
}

/// What an event's journey starts from, as deliver read it.
pub struct Facts<'a> {
    pub envelope: &'a Envelope,
    pub dialog_id: Option<&'a str>,
    /// Its normalized phone and e-mail.
    pub phone: Option<&'a str>,
    pub email: Option<&'a str>,
    /// The item mapped from it; none when it was skipped.
    pub item: Option<&'a Item>,
}

impl<'a> Facts<'a> {
    pub fn of(p: &'a Pending) -> Self {
        let contact = item_contact(&p.item);
        Facts {
            envelope: &p.envelope,
            dialog_id: p.dialog_id.as_deref(),
            phone: contact.phone.as_deref(),
            email: contact.email.as_deref(),
            item: Some(&p.item),
        }
    }
}

impl Entry {
    /// The step `step` of the event `facts` tell of, with the lookup keys it is found by.
    pub fn starting(keys: &Keys, facts: &Facts<'_>, step: Trace) -> Self {
        let contacts = [facts.phone, facts.email];
        let masked: Vec<String> = facts.phone.map(mask_phone).into_iter().chain(facts.email.map(mask_email)).collect();
        let lookups = facts.dialog_id.map(Keys::dialog).into_iter();
        let lookups = lookups.chain(contacts.into_iter().flatten().filter_map(|c| keys.contact(c))).collect();
        let e = facts.envelope;
        let summary = Summary {
            event_id: e.event_id.to_string(),
            integration: e.integration.clone(),
            kind: e.kind.as_str().to_owned(),
            accepted_at: e.received_at,
            accepted_by: e.accepted_by.as_deref().and_then(bounded),
            dialog_id: facts.dialog_id.map(str::to_owned),
            contact: (!masked.is_empty()).then(|| masked.join(", ")),
            item: facts.item.map(masked_item),
            lookups,
            webhook: kept_webhook(facts),
        };
        Entry { summary: Arc::new(summary), step, fresh: false }
    }
}

/// A skipped event's envelope, when it is small enough to keep (its payload is measured before
/// anything is copied).
fn kept_webhook(facts: &Facts<'_>) -> Option<String> {
    let e = facts.envelope;
    let small = facts.item.is_none() && e.payload.get().len() < WEBHOOK_KEPT_AT_MOST - 1024;
    small.then(|| String::from_utf8(e.to_bytes()).ok()).flatten().filter(|w| w.len() <= WEBHOOK_KEPT_AT_MOST)
}

#[cfg(test)]
impl Entry {
    /// Step `outcome` of event `id` of integration `acme`, accepted `minutes_ago`, with its dialog
    /// and phone for lookups.
    pub fn for_tests(keys: &Keys, id: &str, minutes_ago: i64, dialog: &str, phone: &str, outcome: &str) -> Self {
        let lookups = vec![Keys::dialog(dialog), keys.contact(phone).expect("a phone")];
        let summary = Summary {
            event_id: id.into(),
            integration: "acme".into(),
            kind: "chat".into(),
            accepted_at: Utc::now() - chrono::Duration::minutes(minutes_ago),
            accepted_by: None,
            dialog_id: Some(dialog.into()),
            contact: None,
            item: None,
            lookups,
            webhook: None,
        };
        Entry { summary: Arc::new(summary), step: Trace::new(id, "acme", outcome), fresh: false }
    }
}

/// The item as sent, at a bounded size, read field by field (a chat's messages are counted, never
/// copied): when it happened, its attribution, an offline question cut and its contacts masked.
/// The visitor's contacts are the summary's (masked), its id the event's.
pub fn masked_item(item: &Item) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    let attribution = match item {
        Item::Chat(c) => {
            m.insert("start_date_time".into(), c.start_date_time.clone().into());
            m.insert("status".into(), c.status.into());
            if let Some(initiator) = c.initiator {
                m.insert("initiator".into(), initiator.into());
            }
            m.insert("messages".into(), c.messages.len().into());
            &c.attribution
        }
        Item::Offline(o) => {
            m.insert("date_time".into(), o.date_time.clone().into());
            m.insert("form_name".into(), o.form_name.into());
            if let Some(message) = &o.message {
                // Cut first (a long text is masked only where it is kept), then masked, on one line.
                m.insert("message".into(), for_operators(&cut(message, 232), 200).into());
            }
            &o.attribution
        }
    };
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(attribution) {
        m.extend(fields);
    }
    serde_json::Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journey() -> Journey {
        Journey::new(Summary {
            event_id: "vb-1".into(),
            integration: "acme".into(),
            kind: "chat".into(),
            accepted_at: Utc::now(),
            accepted_by: None,
            dialog_id: None,
            contact: None,
            item: None,
            lookups: Vec::new(),
            webhook: None,
        })
    }

    fn step(outcome: &str) -> Trace {
        Trace::new("vb-1", "acme", outcome)
    }

    #[test]
    fn a_journey_ends_delivered_once_and_stays_delivered() {
        let mut j = journey();
        for outcome in ["retrying", "dead_lettered", "replayed", "delivered", "delivered", "dead_lettered"] {
            j.push(step(outcome));
        }
        let outcomes: Vec<&str> = j.steps.iter().map(|s| s.outcome.as_str()).collect();
        assert_eq!(outcomes, ["retrying", "dead_lettered", "replayed", "delivered", "dead_lettered"]);
        assert_eq!(j.end.as_deref(), Some("delivered"));
        assert_eq!(j.last, "dead_lettered");
    }

    #[test]
    fn a_step_written_late_takes_its_place_by_time() {
        let mut j = journey();
        let earlier = Trace { at: Utc::now() - chrono::Duration::seconds(1), ..step("in_doubt") };
        j.push(step("delivered"));
        j.push(earlier);
        let outcomes: Vec<&str> = j.steps.iter().map(|s| s.outcome.as_str()).collect();
        assert_eq!(
            (outcomes, j.last.as_str(), j.end.as_deref()),
            (vec!["in_doubt", "delivered"], "delivered", Some("delivered"))
        );
    }

    #[test]
    fn a_long_journey_keeps_its_first_and_newest_steps() {
        let mut j = journey();
        for n in 0..STEPS_KEPT + 10 {
            j.push(Trace { tier: Some(n.to_string()), ..step("retrying") });
        }
        assert_eq!(j.steps.len(), STEPS_KEPT);
        assert_eq!(j.steps_dropped, 10);
        assert_eq!(j.steps[0].tier.as_deref(), Some("0"));
        assert_eq!(j.steps.last().unwrap().tier.as_deref(), Some((STEPS_KEPT + 9).to_string().as_str()));
    }

    #[test]
    fn waiting_on_purpose_is_not_lost() {
        let later = Utc::now() + chrono::Duration::minutes(1);
        let mut j = journey();
        j.push(step("retrying"));
        assert!(j.lost_since(later));
        j.push(step("paused"));
        assert!(!j.lost_since(later));
        j.push(step("dead_lettered"));
        assert!(!j.lost_since(later));
    }

    #[test]
    fn a_contact_is_found_however_it_is_typed_and_not_kept_in_the_clear() {
        let keys = Keys::new(b"k");
        let key = keys.contact("+7 (912) 345-67-89").unwrap();
        assert_eq!(keys.contact("79123456789"), Some(key.clone()));
        assert!(!key.contains("9123"));
        assert_ne!(Keys::new(b"other").contact("79123456789"), Some(key));
        assert_eq!(keys.contact("Ann@Example.com"), keys.contact("ann@example.com"));
        assert_eq!(keys.contact("not a contact"), None);
    }
}
