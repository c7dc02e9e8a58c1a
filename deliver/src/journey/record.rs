//! What the journey keeps of one event, and the one rule that folds steps into it: both stores
//! merge with [`Journey::push`], so they cannot disagree on how an event ended.

use std::sync::Arc;

use bridge_shared::mapping::contact::{mask_email, mask_phone, normalize_email, normalize_phone};
use bridge_shared::mapping::Item;
use bridge_shared::redact::{cut, mask_contacts};
use bridge_shared::trace::Trace;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::pending::Pending;

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
}

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

/// Outcomes that say an event waits on purpose (a paused or refused integration, a spent quota):
/// not "lost in the middle".
pub const WAITING: [&str; 3] = ["paused", "waiting_for_quota", "not_applied"];

impl Journey {
    pub fn new(summary: Summary) -> Self {
        Journey { summary, end: None, last: String::new(), steps_dropped: 0, steps: Vec::new() }
    }

    /// Adds a step. A second `delivered` is not kept (the ledger delivers once; a crash between
    /// the two writes of the local store may repeat the step, never the delivery); once delivered,
    /// a journey stays delivered, and a dead letter's replay ends again when its copy does.
    pub fn push(&mut self, step: Trace) {
        if step.outcome == DELIVERED && self.end.as_deref() == Some(DELIVERED) {
            return;
        }
        match step.outcome.as_str() {
            DELIVERED => self.end = Some(DELIVERED.to_owned()),
            DEAD_LETTERED if self.end.as_deref() != Some(DELIVERED) => self.end = Some(DEAD_LETTERED.to_owned()),
            _ => {}
        }
        self.last.clone_from(&step.outcome);
        self.steps.push(step);
        if self.steps.len() > STEPS_KEPT {
            self.steps.remove(STEPS_KEPT / 3);
            self.steps_dropped += 1;
        }
    }

    /// As a reader is shown it: without its lookup keys.
    pub fn hide_lookups(&mut self) {
        self.summary.lookups = Vec::new();
    }

    /// Whether it has been on its way since before `cutoff`, not waiting on purpose.
    pub fn lost_since(&self, cutoff: DateTime<Utc>) -> bool {
        self.end.is_none() && self.summary.accepted_at < cutoff && !WAITING.contains(&self.last.as_str())
    }
}

/// One step of one event, with what its journey starts from should it be the first.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Shared by every step of one handling.
    pub summary: Arc<Summary>,
    pub step: Trace,
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

    /// An event's lookup keys: its dialog, its phone and its e-mail.
    fn of(&self, dialog: Option<&str>, item: &Item) -> Vec<String> {
        let contact = item_contact(item);
        let contacts = [contact.phone.as_deref(), contact.email.as_deref()];
        dialog
            .map(Keys::dialog)
            .into_iter()
            .chain(contacts.into_iter().flatten().filter_map(|c| self.contact(c)))
            .collect()
    }
}

fn item_contact(item: &Item) -> &bridge_shared::mapping::Contact {
    match item {
        Item::Chat(c) => &c.contact,
        Item::Offline(o) => &o.contact,
    }
}

impl Entry {
    /// The first step of a [`Pending`]'s handling, which also makes the lookup keys the rest share.
    pub fn starting(keys: &Keys, p: &Pending, step: Trace) -> Self {
        let mut summary = summary_of(p);
        summary.lookups = keys.of(summary.dialog_id.as_deref(), &p.item);
        Entry { summary: Arc::new(summary), step }
    }
}

fn summary_of(p: &Pending) -> Summary {
    let contact = item_contact(&p.item);
    let masked: Vec<String> =
        contact.phone.as_deref().map(mask_phone).into_iter().chain(contact.email.as_deref().map(mask_email)).collect();
    Summary {
        event_id: p.envelope.event_id.to_string(),
        integration: p.envelope.integration.clone(),
        kind: p.kind().as_str().to_owned(),
        accepted_at: p.envelope.received_at,
        accepted_by: p.envelope.accepted_by.clone(),
        dialog_id: p.dialog_id.clone(),
        contact: (!masked.is_empty()).then(|| masked.join(", ")),
        item: Some(masked_item(&p.item)),
        lookups: Vec::new(),
    }
}

/// The item with its phone and e-mail masked, its texts masked and cut, and a chat's messages
/// counted: what CoMagic was sent, at a bounded size.
pub fn masked_item(item: &Item) -> serde_json::Value {
    let mut value = serde_json::to_value(item).unwrap_or(serde_json::Value::Null);
    if let Some(fields) = value.as_object_mut() {
        for (key, field) in fields.iter_mut() {
            let Some(text) = field.as_str() else { continue };
            *field = serde_json::Value::String(match key.as_str() {
                "phone" => mask_phone(text),
                "email" => mask_email(text),
                _ => cut(&mask_contacts(text), 200),
            });
        }
        if let Some(messages) = fields.get("messages").and_then(|m| m.as_array()).map(Vec::len) {
            fields.insert("messages".into(), serde_json::json!({ "count": messages, "texts": "not kept" }));
        }
    }
    value
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
