//! Verbox webhook parsing: both envelope shapes into one normalized [`VerboxEvent`].
//!
//! Verbox publishes no webhook reference (see `reference/verbox-webhooks.md`), so the parser is
//! tolerant by design: nulls, missing keys, numbers sent as strings (and strings as numbers) and
//! unknown keys are all accepted. Only input that is not JSON, not an object, or has no `client`
//! object is refused, with an error that says which.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

mod time;
mod tree;
use time::TimeReader;
pub use time::{Horizon, OutOfRange, VerboxTime, EARLIEST, FUTURE_MARGIN, LATEST};
use tree::{Json, Object};

/// Why a body is not a Verbox webhook. The message is meant for the person who configured Verbox.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    #[error("the body is JSON but not an object")]
    NotAnObject,
    #[error("`data` must be an object when present")]
    DataNotAnObject,
    #[error("no `client` object: this is not a Verbox webhook")]
    NoClient,
}

/// A webhook, normalized. Every field is optional because Verbox documents none of them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VerboxEvent {
    /// `eventId` of envelope A (shape B has none).
    pub event_name: Option<String>,
    /// `secretKey`, compared by ingest with the integration's `verbox_secret_key`.
    pub secret_key: Option<String>,
    pub client: Client,
    pub dialog_id: Option<String>,
    /// The transcript in the order Verbox sent it.
    pub messages: Vec<Message>,
    /// The message that triggered the event (`message`).
    pub trigger: Option<Message>,
    pub operator_login: Option<String>,
    /// The message times that were sent but not kept, being outside what CoMagic can take
    /// ([`VerboxTime`]): those messages count as undated. Empty for a sound webhook.
    pub times_out_of_range: Vec<OutOfRange>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Client {
    pub client_id: Option<String>,
    /// `searchId`, else `id`: the numeric client number.
    pub search_id: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub custom_data: Map<String, Value>,
    /// `source.type.id`, lower-cased; `None` for the site widget as far as we know.
    pub channel: Option<String>,
    pub utm: BTreeMap<String, String>,
    pub referer: Option<String>,
    pub landing_page: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    Client,
    Operator,
    /// Any other `whoSend` (a bot, the system), kept so it is not mistaken for a person.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageType {
    /// `messageType` null: a real message.
    Regular,
    /// An operator's internal note, never shown to the visitor.
    Comment,
    /// An automatic invitation.
    AutoMessage,
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    pub id: Option<String>,
    pub author: Option<Author>,
    pub message_type: Option<MessageType>,
    pub visible_for_client: Option<bool>,
    pub text: Option<String>,
    pub attachments: Vec<String>,
    /// `dateTime`: account-local wall time.
    pub local_time: Option<VerboxTime>,
    /// `dateTimeUTC`.
    pub utc_time: Option<VerboxTime>,
    pub operator_name: Option<String>,
}

impl Message {
    pub fn is_internal_comment(&self) -> bool {
        self.message_type == Some(MessageType::Comment)
    }
}

impl VerboxEvent {
    /// The visitor's question of an offline request: the last client message, else the trigger.
    pub fn offline_question(&self) -> Option<&Message> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.author == Some(Author::Client) && m.text.is_some())
            .or(self.trigger.as_ref())
    }
}

/// Parses a webhook body, keeping the message times that are in range now. Never panics, whatever
/// the bytes.
pub fn parse(body: &[u8]) -> Result<VerboxEvent, ParseError> {
    parse_at(body, Utc::now())
}

/// Parses a webhook body, keeping the message times that are in range at `now` ([`Horizon::at`]).
pub fn parse_at(body: &[u8], now: DateTime<Utc>) -> Result<VerboxEvent, ParseError> {
    let root: Json = serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let root = root.as_object().ok_or(ParseError::NotAnObject)?;
    let data = match root.get("data") {
        None | Some(Json::Null) => root,
        Some(Json::Object(data)) => data,
        Some(_) => return Err(ParseError::DataNotAnObject),
    };
    let client = data.get("client").and_then(Json::as_object).ok_or(ParseError::NoClient)?;
    let dialog = data.get("dialog").and_then(Json::as_object);
    let mut times = TimeReader::new(now);
    let trigger = data.get("message").and_then(Json::as_object).map(|m| parse_message(m, "message", &mut times));
    let (listed, at) = match dialog.and_then(|d| d.get("messages")) {
        Some(list) => (Some(list), "dialog.messages"),
        None => (data.get("messages"), "messages"),
    };
    let mut messages = Vec::new();
    for (i, m) in listed.and_then(Json::as_array).unwrap_or_default().iter().enumerate() {
        if let Some(m) = m.as_object() {
            messages.push(parse_message(m, &format!("{at}[{i}]"), &mut times));
        }
    }
    if messages.is_empty() {
        messages.extend(trigger.clone());
    }
    Ok(VerboxEvent {
        event_name: text(root.get("eventId")).or_else(|| text(data.get("eventId"))),
        secret_key: text(root.get("secretKey")).or_else(|| text(data.get("secretKey"))),
        client: parse_client(client, data),
        dialog_id: dialog.and_then(|d| text(d.get("id"))),
        messages,
        trigger,
        operator_login: data.get("operator").and_then(|o| text(o.get("login"))).filter(|login| login != "Offline"),
        times_out_of_range: times.out_of_range,
    })
}

fn parse_client(client: &Object, data: &Object) -> Client {
    let full_name = [text(client.get("firstName")), text(client.get("lastName"))]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let utm = client
        .get("utm")
        .and_then(Json::as_object)
        .map(|utm| utm.entries().into_iter().filter_map(|(k, v)| text(Some(v)).map(|v| (k.to_owned(), v))).collect())
        .unwrap_or_default();
    Client {
        client_id: text(client.get("clientId")),
        search_id: text(client.get("searchId")).or_else(|| text(client.get("id"))),
        name: text(client.get("name")).or(Some(full_name).filter(|n| !n.is_empty())),
        phone: text(client.get("phone")),
        email: text(client.get("email")),
        custom_data: client.get("customData").and_then(Json::as_object).map(Object::to_map).unwrap_or_default(),
        channel: path(client, &["source", "type", "id"]).and_then(|v| text(Some(v))).map(|c| c.to_lowercase()),
        utm,
        referer: text(client.get("referer")),
        landing_page: path(client, &["lastVisit", "page", "url"])
            .or_else(|| path(data, &["page", "url"]))
            .and_then(|v| text(Some(v))),
    }
}

/// One message; `at` names it in the body, for a time out of range.
fn parse_message(m: &Object, at: &str, times: &mut TimeReader) -> Message {
    let content = m.get("content").and_then(Json::as_object);
    let attachments = content
        .and_then(|c| c.get("attachments"))
        .and_then(Json::as_array)
        .map(|list| list.iter().filter_map(attachment_name).collect())
        .unwrap_or_default();
    Message {
        id: text(m.get("id")),
        author: text(m.get("whoSend")).map(|who| match who.to_lowercase().as_str() {
            "client" => Author::Client,
            "operator" => Author::Operator,
            other => Author::Other(other.to_owned()),
        }),
        message_type: match m.get("messageType") {
            None | Some(Json::Null) => Some(MessageType::Regular),
            v => text(v).map(|t| match t.as_str() {
                "comment" => MessageType::Comment,
                "autoMessage" => MessageType::AutoMessage,
                _ => MessageType::Other(t),
            }),
        },
        visible_for_client: m.get("isVisibleForClient").and_then(flag),
        text: text(m.get("text")).or_else(|| content.and_then(|c| text(c.get("text")))),
        attachments,
        local_time: times.read(m.get("dateTime"), || format!("{at}.dateTime")),
        utc_time: times.read(m.get("dateTimeUTC"), || format!("{at}.dateTimeUTC")),
        operator_name: text(m.get("operatorName")),
    }
}

/// An attachment is named by its file name, else its URL; a bare string is taken as the name.
fn attachment_name(a: &Json) -> Option<String> {
    match a {
        Json::Object(o) => ["name", "fileName", "filename", "title", "url", "link"].iter().find_map(|k| text(o.get(k))),
        other => text(Some(other)),
    }
}

fn path<'a, 'j>(root: &'a Object<'j>, keys: &[&str]) -> Option<&'a Json<'j>> {
    let (first, rest) = keys.split_first()?;
    rest.iter().try_fold(root.get(first)?, |v, k| v.as_object()?.get(k))
}

/// A non-empty, trimmed string from a string or a number; anything else is absent.
fn text(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_owned),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn flag(v: &Json) -> Option<bool> {
    match v {
        Json::Bool(b) => Some(*b),
        Json::Number(n) => n.as_i64().map(|n| n != 0),
        Json::String(s) => match s.trim().to_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A positive integer from a string or a number, as `Comagic.getSessionId()` returns it.
pub fn positive_integer(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => {
            n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 1.0 && *f < 9.0e15).map(|f| f as u64))
        }
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .filter(|n| *n > 0)
}

#[cfg(test)]
mod tests;
