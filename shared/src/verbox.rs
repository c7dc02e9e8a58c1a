//! Verbox webhook parsing: both envelope shapes into one normalized [`VerboxEvent`].
//!
//! Verbox publishes no webhook reference (see `reference/verbox-webhooks.md`), so the parser is
//! tolerant by design: nulls, missing keys, numbers sent as strings (and strings as numbers) and
//! unknown keys are all accepted. Only input that is not JSON, not an object, or has no `client`
//! object is refused, with an error that says which.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::{Map, Value};

mod tree;
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
    pub local_time: Option<NaiveDateTime>,
    /// `dateTimeUTC`.
    pub utc_time: Option<NaiveDateTime>,
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

/// Parses a webhook body. Never panics, whatever the bytes.
pub fn parse(body: &[u8]) -> Result<VerboxEvent, ParseError> {
    let root: Json = serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let root = root.as_object().ok_or(ParseError::NotAnObject)?;
    let data = match root.get("data") {
        None | Some(Json::Null) => root,
        Some(Json::Object(data)) => data,
        Some(_) => return Err(ParseError::DataNotAnObject),
    };
    let client = data.get("client").and_then(Json::as_object).ok_or(ParseError::NoClient)?;
    let dialog = data.get("dialog").and_then(Json::as_object);
    let trigger = data.get("message").and_then(Json::as_object).map(parse_message);
    let mut messages = dialog
        .and_then(|d| d.get("messages"))
        .or_else(|| data.get("messages"))
        .and_then(Json::as_array)
        .map(|list| list.iter().filter_map(Json::as_object).map(parse_message).collect())
        .unwrap_or_else(Vec::new);
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

fn parse_message(m: &Object) -> Message {
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
        local_time: m.get("dateTime").and_then(timestamp),
        utc_time: m.get("dateTimeUTC").and_then(timestamp),
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

/// Verbox sends `YYYY-MM-DD HH:MM:SS`; ISO forms and unix seconds are accepted too.
fn timestamp(v: &Json) -> Option<NaiveDateTime> {
    match v {
        Json::Number(n) => unix_seconds(n.as_i64()?),
        Json::String(s) => {
            let s = s.trim();
            if let Some(t) = plain_date_time(s) {
                return Some(t);
            }
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Some(t.naive_utc());
            }
            ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                .or_else(|| s.parse::<i64>().ok().and_then(unix_seconds))
        }
        _ => None,
    }
}

fn unix_seconds(seconds: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(seconds, 0).map(|t| t.naive_utc())
}

/// `YYYY-MM-DD HH:MM:SS` (or with `T`), read by hand. Verbox stamps every message with it twice, and
/// chrono's format interpreter took 9 of the 31 µs that parsing a 4 KB, 20-message dialog cost;
/// a string of that form has no offset, so reading it first changes no result. Anything else: `None`.
fn plain_date_time(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    let shaped =
        b.len() == 19 && b[4] == b'-' && b[7] == b'-' && matches!(b[10], b' ' | b'T') && b[13] == b':' && b[16] == b':';
    if !shaped {
        return None;
    }
    let number = |at: std::ops::Range<usize>| {
        b[at].iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let date = NaiveDate::from_ymd_opt(number(0..4)? as i32, number(5..7)?, number(8..10)?)?;
    date.and_hms_opt(number(11..13)?, number(14..16)?, number(17..19)?)
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
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(v: Value) -> VerboxEvent {
        parse(v.to_string().as_bytes()).expect("parses")
    }

    #[test]
    fn envelope_a_reads_data() {
        let e = parse_json(json!({
            "eventId": "dialogFinished", "secretKey": "s3",
            "data": {
                "client": {"clientId": "c-1", "searchId": 42, "name": "Ivan", "phone": "+7 912",
                           "email": "I@x.ru", "customData": {"comagic_session_id": "123"},
                           "source": {"type": {"id": "Telegram"}},
                           "utm": {"utm_source": "ya", "utm_medium": null},
                           "referer": "https://ya.ru", "lastVisit": {"page": {"url": "https://shop/?a=1"}}},
                "dialog": {"id": 77, "messages": [
                    {"id": 1, "whoSend": "client", "text": "hi", "dateTime": "2026-01-02 10:00:00",
                     "dateTimeUTC": "2026-01-02 07:00:00", "messageType": null},
                    {"id": "2", "whoSend": "operator", "text": "note", "messageType": "comment",
                     "isVisibleForClient": "0", "operatorName": "Olga"}
                ]},
                "message": {"id": 2, "content": {"text": "from content", "attachments": [{"name": "a.png"}, "b.pdf"]}}
            }
        }));
        assert_eq!(e.event_name.as_deref(), Some("dialogFinished"));
        assert_eq!(e.secret_key.as_deref(), Some("s3"));
        assert_eq!(e.client.client_id.as_deref(), Some("c-1"));
        assert_eq!(e.client.search_id.as_deref(), Some("42"));
        assert_eq!(e.client.channel.as_deref(), Some("telegram"));
        assert_eq!(e.client.utm.get("utm_source").map(String::as_str), Some("ya"));
        assert!(!e.client.utm.contains_key("utm_medium"));
        assert_eq!(e.client.landing_page.as_deref(), Some("https://shop/?a=1"));
        assert_eq!(e.dialog_id.as_deref(), Some("77"));
        assert_eq!(e.messages.len(), 2);
        assert_eq!(e.messages[0].author, Some(Author::Client));
        assert_eq!(e.messages[0].message_type, Some(MessageType::Regular));
        assert_eq!(e.messages[0].utc_time.unwrap().to_string(), "2026-01-02 07:00:00");
        assert!(e.messages[1].is_internal_comment());
        assert_eq!(e.messages[1].visible_for_client, Some(false));
        let trigger = e.trigger.unwrap();
        assert_eq!(trigger.text.as_deref(), Some("from content"));
        assert_eq!(trigger.attachments, vec!["a.png", "b.pdf"]);
    }

    #[test]
    fn envelope_b_reads_the_root_and_ignores_the_offline_operator() {
        let e = parse_json(json!({
            "client": {"id": "9", "firstName": "Anna", "lastName": "K", "phone": null},
            "message": {"whoSend": "client", "text": "call me", "dateTime": "2026-01-02 10:00:00"},
            "operator": {"login": "Offline"},
            "unknown": [1, 2, 3]
        }));
        assert_eq!(e.client.search_id.as_deref(), Some("9"));
        assert_eq!(e.client.name.as_deref(), Some("Anna K"));
        assert_eq!(e.client.phone, None);
        assert_eq!(e.operator_login, None);
        assert_eq!(e.messages.len(), 1, "the trigger stands in for an absent transcript");
        assert_eq!(e.offline_question().unwrap().text.as_deref(), Some("call me"));
    }

    #[test]
    fn offline_question_is_the_last_client_message() {
        let e = parse_json(json!({"data": {"client": {}, "messages": [
            {"whoSend": "client", "text": "first"},
            {"whoSend": "operator", "text": "answer"},
            {"whoSend": "client", "text": "second"}
        ]}}));
        assert_eq!(e.offline_question().unwrap().text.as_deref(), Some("second"));
    }

    #[test]
    fn garbage_gets_a_typed_error() {
        assert!(matches!(parse(b"not json"), Err(ParseError::NotJson(_))));
        assert_eq!(parse(b"[1,2]"), Err(ParseError::NotAnObject));
        assert_eq!(parse(br#"{"data": 5}"#), Err(ParseError::DataNotAnObject));
        assert_eq!(parse(br#"{"eventId": "x"}"#), Err(ParseError::NoClient));
        assert_eq!(parse(br#"{"client": "me"}"#), Err(ParseError::NoClient));
    }

    #[test]
    fn times_in_several_forms() {
        for (raw, want) in [
            (json!("2026-01-02 03:04:05"), "2026-01-02 03:04:05"),
            (json!("2026-01-02T03:04:05"), "2026-01-02 03:04:05"),
            (json!("2026-01-02T06:04:05+03:00"), "2026-01-02 03:04:05"),
            (json!(1767323045), "2026-01-02 03:04:05"),
            (json!("1767323045"), "2026-01-02 03:04:05"),
        ] {
            assert_eq!(timestamp_of(&raw).map(|t| t.to_string()).as_deref(), Some(want), "{raw}");
        }
        assert_eq!(timestamp_of(&json!("yesterday")), None);
    }

    fn timestamp_of(v: &Value) -> Option<NaiveDateTime> {
        timestamp(&serde_json::from_str(&v.to_string()).unwrap())
    }

    #[test]
    fn session_ids_must_be_positive_integers() {
        assert_eq!(positive_integer(&json!("123")), Some(123));
        assert_eq!(positive_integer(&json!(123)), Some(123));
        assert_eq!(positive_integer(&json!(0)), None);
        assert_eq!(positive_integer(&json!(-5)), None);
        assert_eq!(positive_integer(&json!("12a")), None);
        assert_eq!(positive_integer(&json!(1.5)), None);
        assert_eq!(positive_integer(&json!(null)), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn plain_date_times_read_as_chrono_reads_them(
            y in 0i32..10_000, mo in 0u32..14, d in 0u32..33, h in 0u32..25, mi in 0u32..61, sec in 0u32..62, t in proptest::bool::ANY
        ) {
            let s = format!("{y:04}-{mo:02}-{d:02}{}{h:02}:{mi:02}:{sec:02}", if t { 'T' } else { ' ' });
            let format = if t { "%Y-%m-%dT%H:%M:%S" } else { "%Y-%m-%d %H:%M:%S" };
            match plain_date_time(&s) {
                Some(read) => proptest::prop_assert_eq!(Some(read), NaiveDateTime::parse_from_str(&s, format).ok()),
                // Only what chrono refuses too, or a leap second, which it keeps and we leave to it.
                None => proptest::prop_assert!(sec == 60 || NaiveDateTime::parse_from_str(&s, format).is_err(), "{}", s),
            }
        }

        #[test]
        fn plain_date_time_never_panics(s in ".{0,24}") {
            let _ = plain_date_time(&s);
        }

        /// `parse` reads its own tree, not `serde_json::Value`; where they could differ (a key sent
        /// twice, keys out of order) it must read what `Value` keeps: the last of each key.
        #[test]
        fn repeated_keys_read_as_value_keeps_them(text in json_text_with_duplicate_keys()) {
            let as_value_keeps = |text: &str| serde_json::from_str::<Value>(text).map(|v| v.to_string());
            let shapes = [
                text.clone(),
                format!(r#"{{"client":{{"utm":{text}}},"data":{text},"data":{{"client":{text},"client":{{"utm":{text}}}}}}}"#),
            ];
            for shape in shapes {
                if let Ok(kept) = as_value_keeps(&shape) {
                    proptest::prop_assert_eq!(parse(shape.as_bytes()), parse(kept.as_bytes()), "{}", shape);
                }
            }
        }

        #[test]
        fn arbitrary_json_never_panics(value in arbitrary_json()) {
            let _ = parse(value.to_string().as_bytes());
            let wrapped = json!({"eventId": value.clone(), "data": {"client": value.clone(), "dialog": value.clone(), "message": value.clone(), "messages": [value.clone()]}});
            let _ = parse(wrapped.to_string().as_bytes());
            let flat = json!({"client": {"customData": value.clone(), "source": value.clone(), "utm": value.clone(), "phone": value.clone()}, "messages": [{"dateTime": value.clone(), "content": value.clone(), "whoSend": value}]});
            let _ = parse(flat.to_string().as_bytes());
        }
    }

    /// JSON text whose objects may repeat a key, which `Value` cannot hold.
    fn json_text_with_duplicate_keys() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        // No floats: serde_json reads a long float to the nearest few ulps only, so a float read,
        // written and read again can move, which says nothing of keys. Trees read floats as
        // `Value` does (`tree::tests`).
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".*".prop_map(Value::from),
        ]
        .prop_map(|v| v.to_string());
        leaf.prop_recursive(4, 64, 8, |inner| {
            let key = prop_oneof![
                Just("client"),
                Just("data"),
                Just("dialog"),
                Just("messages"),
                Just("message"),
                Just("id"),
                Just("text"),
                Just("utm"),
                Just("customData"),
                Just("clientId"),
                Just("whoSend"),
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(|items| format!("[{}]", items.join(","))),
                proptest::collection::vec((key, inner), 0..8).prop_map(|members| {
                    let members: Vec<String> = members.into_iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    pub(super) fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ".*".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
                proptest::collection::btree_map(
                    prop_oneof![Just("client".to_owned()), Just("messages".to_owned()), Just("id".to_owned()), ".*"],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
