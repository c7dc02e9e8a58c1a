//! The queued event: its kind, its deterministic id and the envelope that travels through RabbitMQ.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::verbox::VerboxEvent;

/// Which webhook URL an event came in on; also its routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Chat,
    Offline,
}

impl EventKind {
    pub const ALL: [EventKind; 2] = [EventKind::Chat, EventKind::Offline];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Chat => "chat",
            EventKind::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id of an accepted event, sent to CoMagic as `ext_id`. The same webhook always yields the same
/// id, so a webhook Verbox sends twice is delivered once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// Chats are identified by integration and dialog id; offline requests by integration, client
    /// and question. Where Verbox leaves those out, the next most stable facts stand in, and the
    /// raw body itself last of all (so an exact resend is still recognised).
    pub fn derive(integration: &str, kind: EventKind, event: &VerboxEvent, raw: &[u8]) -> Self {
        let client = event.client.client_id.as_deref().or(event.client.search_id.as_deref());
        let first_message = event.messages.first();
        let parts: Vec<&str> = match kind {
            EventKind::Chat => match (&event.dialog_id, client, first_message) {
                (Some(dialog), _, _) => vec!["dialog", dialog],
                (None, Some(client), Some(m)) => {
                    vec!["client-first-message", client, m.id.as_deref().unwrap_or(""), m.text.as_deref().unwrap_or("")]
                }
                _ => vec![],
            },
            EventKind::Offline => match (client, event.offline_question().and_then(|m| m.text.as_deref())) {
                (Some(client), Some(question)) => vec!["client-question", client, question],
                _ => vec![],
            },
        };
        let mut hash = Sha256::new();
        for part in [integration, kind.as_str()].iter().chain(parts.iter()) {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        if parts.is_empty() {
            hash.update(b"raw\0");
            hash.update(raw);
        }
        let digest = hash.finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        EventId(format!("vb-{hex}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The current envelope schema; a consumer refuses (dead-letters) any other.
pub const ENVELOPE_SCHEMA: u32 = 1;

/// What ingest publishes and deliver consumes. The raw Verbox body is kept whole (as a string, it is
/// valid UTF-8 JSON) so a replay after a parser fix re-reads the original.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub schema: u32,
    pub event_id: EventId,
    pub integration: String,
    pub kind: EventKind,
    /// When ingest accepted it (RFC 3339, UTC): the start of the end-to-end latency.
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// The ingest replica that accepted it (its host name); absent from older releases' envelopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_by: Option<String>,
    pub payload: Box<serde_json::value::RawValue>,
}

impl Envelope {
    /// A `null` payload, for an envelope whose payload was parsed and is no longer needed.
    pub fn no_payload() -> Box<serde_json::value::RawValue> {
        serde_json::value::RawValue::from_string("null".to_owned()).expect("null is JSON")
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verbox::parse;

    fn id(integration: &str, kind: EventKind, body: &str) -> EventId {
        EventId::derive(integration, kind, &parse(body.as_bytes()).unwrap(), body.as_bytes())
    }

    #[test]
    fn chat_id_depends_on_integration_and_dialog_only() {
        let a = id("acme", EventKind::Chat, r#"{"data":{"client":{"name":"A"},"dialog":{"id":5}}}"#);
        let b = id("acme", EventKind::Chat, r#"{"eventId":"x","data":{"client":{"name":"B"},"dialog":{"id":"5"}}}"#);
        assert_eq!(a, b);
        assert_ne!(a, id("other", EventKind::Chat, r#"{"data":{"client":{},"dialog":{"id":5}}}"#));
        assert_ne!(a, id("acme", EventKind::Chat, r#"{"data":{"client":{},"dialog":{"id":6}}}"#));
        assert!(a.as_str().starts_with("vb-") && a.as_str().len() == 35);
    }

    #[test]
    fn offline_id_depends_on_client_and_question() {
        let body = |client: &str, q: &str| {
            format!(r#"{{"client":{{"clientId":"{client}"}},"message":{{"whoSend":"client","text":"{q}"}}}}"#)
        };
        let a = id("acme", EventKind::Offline, &body("c1", "price?"));
        assert_eq!(a, id("acme", EventKind::Offline, &body("c1", "price?")));
        assert_ne!(a, id("acme", EventKind::Offline, &body("c2", "price?")));
        assert_ne!(a, id("acme", EventKind::Offline, &body("c1", "when?")));
    }

    #[test]
    fn without_stable_facts_the_raw_body_decides() {
        let a = id("acme", EventKind::Chat, r#"{"client":{"name":"A"}}"#);
        assert_eq!(a, id("acme", EventKind::Chat, r#"{"client":{"name":"A"}}"#));
        assert_ne!(a, id("acme", EventKind::Chat, r#"{"client":{"name":"B"}}"#));
    }

    /// A re-sent webhook must keep its id across releases, or CoMagic gets it twice: these ids are
    /// pinned, and a change to parsing or hashing that moves one is a breaking change.
    #[test]
    fn event_ids_stay_what_earlier_releases_made_them() {
        let pinned = [
            (
                EventKind::Chat,
                r#"{"eventId":"chat.finished","data":{"client":{"clientId":"c1"},"dialog":{"id":"123"}}}"#,
                "vb-a1a23a347d67fa2fa7112e5db06fab31",
            ),
            (
                EventKind::Chat,
                r#"{"client":{"clientId":"c1"},"messages":[{"id":7,"text":" Hello "}]}"#,
                "vb-d7c262876b21a9d29719333538e1f6d5",
            ),
            (
                EventKind::Chat,
                r#"{"client":{"searchId":42},"dialog":{"messages":[{"text":"Привет"}]}}"#,
                "vb-b09a39eab0dd9eeb97ddbc2d6ebbcf1b",
            ),
            (
                EventKind::Offline,
                r#"{"client":{"clientId":"c1"},"dialog":{"messages":[{"whoSend":"Client","text":"price?"},{"whoSend":"operator","text":"soon"}]}}"#,
                "vb-91b4c9dc99c1273da5a648ecf6db6857",
            ),
            (
                EventKind::Offline,
                r#"{"client":{"id":"9"},"message":{"whoSend":"client","text":"when?"}}"#,
                "vb-7f632b27205c804e3e8f4bf132198a4b",
            ),
            (EventKind::Chat, r#"{"client":{"name":"A"}}"#, "vb-13568b78e1d1cc6a9d292e1b55cb3c2b"),
            (
                EventKind::Chat,
                r#"{"client":{"clientId":"c\u00e9"},"messages":[{"id":"m1","text":"say \"hi\"\n"}]}"#,
                "vb-f48f2142538c53fbc14f1c52dabf47e2",
            ),
        ];
        for (kind, body, expected) in pinned {
            assert_eq!(id("acme", kind, body).as_str(), expected, "{kind} {body}");
        }
    }

    #[test]
    fn envelope_round_trips_with_the_payload_byte_for_byte() {
        let raw = r#"{"client": {"name":"Я"},  "x":[1,2]}"#;
        let env = Envelope {
            schema: ENVELOPE_SCHEMA,
            event_id: id("acme", EventKind::Chat, raw),
            integration: "acme".into(),
            kind: EventKind::Chat,
            received_at: chrono::DateTime::from_timestamp(1_767_323_045, 0).unwrap(),
            accepted_by: None,
            payload: serde_json::value::RawValue::from_string(raw.to_owned()).unwrap(),
        };
        let back = Envelope::from_bytes(&env.to_bytes()).unwrap();
        assert_eq!((&back.event_id, back.kind, back.received_at), (&env.event_id, env.kind, env.received_at));
        assert_eq!(back.integration, "acme");
        assert_eq!(back.payload.get(), raw, "the raw payload is kept byte for byte");
    }
}
