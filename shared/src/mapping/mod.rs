//! A normalized Verbox event → one `upload.chats` or `upload.offline_messages` item
//! (docs/attribution-and-mapping.md).

pub mod contact;
mod time;

/// CoMagic's date-time format: `YYYY-MM-DD hh:mm:ss`, in the account's zone.
pub use time::FORMAT as DATE_TIME;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::attribution::{Attributed, Attribution};
use crate::event::{EventId, EventKind};
use crate::integrations::{Integration, Target};
use crate::verbox::{Author, Message, MessageType, VerboxEvent};

pub use time::comagic_time;

/// Why an event is acknowledged without being sent: CoMagic could not accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    NoContact,
    EmptyChat,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NoContact => "no_contact",
            Skip::EmptyChat => "empty_chat",
        }
    }
}

/// The attribution fields shared by both item kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AttributionFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visitor_session_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<u64>,
}

impl From<Attributed> for AttributionFields {
    fn from(a: Attributed) -> Self {
        match a {
            Attributed::Session { visitor_session_id } => {
                AttributionFields { visitor_session_id: Some(visitor_session_id), ..Default::default() }
            }
            Attributed::Target(Target::Campaign { campaign_id }) => {
                AttributionFields { campaign_id: Some(campaign_id), ..Default::default() }
            }
            Attributed::Target(Target::SiteSource { site_id, source_id }) => {
                AttributionFields { site_id: Some(site_id), source_id: Some(source_id), ..Default::default() }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contact {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub date_time: String,
    pub source: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub employee_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatItem {
    pub ext_id: String,
    pub start_date_time: String,
    #[serde(flatten)]
    pub contact: Contact,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initiator: Option<&'static str>,
    #[serde(flatten)]
    pub attribution: AttributionFields,
    pub messages: Vec<ChatMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfflineItem {
    pub ext_id: String,
    pub date_time: String,
    #[serde(flatten)]
    pub contact: Contact,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub form_name: &'static str,
    #[serde(flatten)]
    pub attribution: AttributionFields,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Item {
    Chat(ChatItem),
    Offline(OfflineItem),
}

impl Item {
    pub fn ext_id(&self) -> &str {
        match self {
            Item::Chat(c) => &c.ext_id,
            Item::Offline(o) => &o.ext_id,
        }
    }

    /// When it happened, `YYYY-MM-DD hh:mm:ss` in the account's time zone (what reports filter by).
    pub fn date_time(&self) -> &str {
        match self {
            Item::Chat(c) => &c.start_date_time,
            Item::Offline(o) => &o.date_time,
        }
    }
}

/// What the mapping needs besides the event itself.
#[derive(Debug, Clone, Copy)]
pub struct MappingContext<'a> {
    pub integration: &'a Integration,
    pub event_id: &'a EventId,
    pub attribution: Attribution,
    /// When ingest received the webhook: the time of last resort.
    pub received_at: DateTime<Utc>,
    /// Now; no time sent to CoMagic is later.
    pub now: DateTime<Utc>,
}

pub fn map_event(kind: EventKind, event: &VerboxEvent, cx: MappingContext<'_>) -> Result<Item, Skip> {
    match kind {
        EventKind::Chat => map_chat(event, cx).map(Item::Chat),
        EventKind::Offline => map_offline(event, cx).map(Item::Offline),
    }
}

fn contact(event: &VerboxEvent) -> Result<Contact, Skip> {
    let phone = event.client.phone.as_deref().and_then(contact::normalize_phone);
    let email = event.client.email.as_deref().and_then(contact::normalize_email);
    if phone.is_none() && email.is_none() {
        return Err(Skip::NoContact);
    }
    Ok(Contact { name: event.client.name.clone(), phone, email })
}

fn map_chat(event: &VerboxEvent, cx: MappingContext<'_>) -> Result<ChatItem, Skip> {
    let tz = cx.integration.timezone;
    let fallback_time = time::receipt_time(cx.received_at, tz, cx.now);
    let mut last_time = None::<String>;
    let mut messages = Vec::new();
    let mut first: Option<&Message> = None;
    for m in event.messages.iter().filter(|m| !m.is_internal_comment()) {
        let Some(text) = message_text(m) else {
            continue;
        };
        let date_time =
            comagic_time(m, tz, cx.now).or_else(|| last_time.clone()).unwrap_or_else(|| fallback_time.clone());
        last_time = Some(date_time.clone());
        let source = message_source(m);
        first.get_or_insert(m);
        messages.push(ChatMessage {
            date_time,
            source,
            message: text,
            employee_id: (source == "operator").then_some(cx.integration.employee_id),
        });
    }
    let first = first.ok_or(Skip::EmptyChat)?;
    let contact = contact(event)?;
    let operator_answered = messages.iter().any(|m| m.source == "operator");
    Ok(ChatItem {
        ext_id: cx.event_id.to_string(),
        start_date_time: messages[0].date_time.clone(),
        contact,
        status: if operator_answered { "succeed" } else { "lost" },
        initiator: initiator(first),
        attribution: cx.attribution.to.into(),
        messages,
    })
}

fn map_offline(event: &VerboxEvent, cx: MappingContext<'_>) -> Result<OfflineItem, Skip> {
    let contact = contact(event)?;
    let question = event.offline_question();
    let tz = cx.integration.timezone;
    let date_time = question
        .and_then(|m| comagic_time(m, tz, cx.now))
        .unwrap_or_else(|| time::receipt_time(cx.received_at, tz, cx.now));
    Ok(OfflineItem {
        ext_id: cx.event_id.to_string(),
        date_time,
        contact,
        message: question.and_then(message_text),
        form_name: "Verbox",
        attribution: cx.attribution.to.into(),
    })
}

/// The text, else a line naming the attachments; `None` for a message with neither.
fn message_text(m: &Message) -> Option<String> {
    match (&m.text, m.attachments.is_empty()) {
        (Some(text), _) => Some(text.clone()),
        (None, false) => Some(format!("Вложения: {}", m.attachments.join(", "))),
        (None, true) => None,
    }
}

fn message_source(m: &Message) -> &'static str {
    match (&m.message_type, &m.author) {
        (Some(MessageType::AutoMessage), _) => "system",
        (_, Some(Author::Client)) => "visitor",
        (_, Some(Author::Operator)) => "operator",
        _ => "system",
    }
}

fn initiator(first: &Message) -> Option<&'static str> {
    match (&first.message_type, &first.author) {
        (Some(MessageType::AutoMessage), _) => Some("autoinvite"),
        (_, Some(Author::Client)) => Some("visitor"),
        (_, Some(Author::Operator)) => Some("operator"),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests;
