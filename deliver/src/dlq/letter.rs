//! One dead-lettered message as operators see it: what it is (integration, kind, event id, read from
//! our headers, else from the envelope, else from the routing key) and why it died.

use bridge_shared::amqp::headers::{self, DeadClass};
use bridge_shared::event::EventKind;
use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;
use serde_json::Value;

/// `x-bridge-error-class` of a message the broker dead-lettered itself (over `x-delivery-limit`),
/// which therefore carries none of our headers.
const BROKER_POISON: &str = "dead-lettered by the broker after too many deliveries";

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub event_id: Option<String>,
    /// Empty when not even the envelope names it.
    pub integration: String,
    pub kind: Option<EventKind>,
    /// One of the contract's classes; `None` only for a message none of our code wrote.
    pub class: Option<&'static str>,
    pub error: String,
    pub attempts: u64,
    pub dead_at: Option<DateTime<Utc>>,
}

impl DeadLetter {
    pub fn read(delivery: &Delivery) -> Self {
        let h = delivery.properties.headers().clone().unwrap_or_default();
        let envelope: Option<Value> = serde_json::from_slice(&delivery.data).ok();
        let from_envelope =
            |key: &str| envelope.as_ref().and_then(|e| e.get(key)).and_then(Value::as_str).map(str::to_owned);
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let integration = nonempty(headers::get_str(&h, headers::INTEGRATION))
            .or_else(|| from_envelope("integration"))
            .unwrap_or_default();
        let kind = [
            nonempty(headers::get_str(&h, headers::KIND)),
            from_envelope("kind"),
            Some(delivery.routing_key.to_string()),
        ]
        .into_iter()
        .flatten()
        .find_map(|k| EventKind::parse(&k));
        let broker_dead_at = broker_dead_at(&h);
        let class = match headers::get_str(&h, headers::ERROR_CLASS) {
            Some(c) => DeadClass::parse(&c).map(DeadClass::as_str),
            None if broker_dead_at.is_some() => Some(DeadClass::Poison.as_str()),
            None => None,
        };
        let error = headers::get_str(&h, headers::ERROR).unwrap_or_else(|| {
            if broker_dead_at.is_some() {
                BROKER_POISON.into()
            } else {
                String::new()
            }
        });
        let dead_at = headers::get_str(&h, headers::DEAD_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc))
            .or(broker_dead_at);
        DeadLetter {
            event_id: from_envelope("event_id"),
            integration,
            kind,
            class,
            error,
            attempts: headers::get_u64(&h, headers::ATTEMPTS).unwrap_or(0),
            dead_at,
        }
    }

    pub fn kind_str(&self) -> &'static str {
        self.kind.map_or("?", EventKind::as_str)
    }
}

/// The time in the broker's `x-death` record, when the broker dead-lettered the message.
fn broker_dead_at(h: &FieldTable) -> Option<DateTime<Utc>> {
    let AMQPValue::FieldArray(deaths) = h.inner().get("x-death")? else { return None };
    deaths.as_slice().iter().find_map(|death| match death {
        AMQPValue::FieldTable(t) => match t.inner().get("time") {
            Some(AMQPValue::Timestamp(seconds)) => DateTime::from_timestamp(i64::try_from(*seconds).ok()?, 0),
            _ => None,
        },
        _ => None,
    })
}

/// Which dead letters a command applies to; every given criterion must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub integration: Option<String>,
    pub kind: Option<EventKind>,
    pub class: Option<DeadClass>,
    pub since: Option<DateTime<Utc>>,
    /// One event's letters (a journey's "send again").
    pub event_id: Option<String>,
}

impl Filter {
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        self.integration.as_ref().is_none_or(|i| *i == letter.integration)
            && self.kind.is_none_or(|k| Some(k) == letter.kind)
            && self.class.is_none_or(|c| Some(c.as_str()) == letter.class)
            && self.since.is_none_or(|since| letter.dead_at.is_some_and(|at| at >= since))
            && self.event_id.as_ref().is_none_or(|id| letter.event_id.as_ref() == Some(id))
    }
}

/// `--since`: an RFC 3339 time, or an age such as `90m`, `6h`, `2d`.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let age = bridge_shared::settings::parse_duration(text)
        .map_err(|_| format!("`{text}` is neither a time like 2026-11-24T09:00:00Z nor an age like 6h or 2d"))?;
    Ok(now - chrono::Duration::from_std(age).map_err(|e| e.to_string())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(integration: &str, kind: EventKind, class: DeadClass, dead_at: &str) -> DeadLetter {
        DeadLetter {
            event_id: Some("vb-1".into()),
            integration: integration.into(),
            kind: Some(kind),
            class: Some(class.as_str()),
            error: "x".into(),
            attempts: 1,
            dead_at: Some(DateTime::parse_from_rfc3339(dead_at).unwrap().with_timezone(&Utc)),
        }
    }

    #[test]
    fn every_given_criterion_must_hold() {
        let l = letter("acme", EventKind::Chat, DeadClass::ComagicRejected, "2026-11-24T10:00:00Z");
        assert!(Filter::default().matches(&l));
        let by_integration = Filter { integration: Some("acme".into()), ..Default::default() };
        assert!(by_integration.matches(&l));
        assert!(!Filter { integration: Some("other".into()), ..Default::default() }.matches(&l));
        assert!(!Filter { kind: Some(EventKind::Offline), ..by_integration.clone() }.matches(&l));
        assert!(!Filter { class: Some(DeadClass::Poison), ..Default::default() }.matches(&l));
        let since = |t: &str| Filter { since: Some(parse_since(t, Utc::now()).unwrap()), ..Default::default() };
        assert!(since("2026-11-24T09:59:59Z").matches(&l));
        assert!(!since("2026-11-24T10:00:01Z").matches(&l));
    }

    #[test]
    fn since_takes_a_time_or_an_age() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_since("6h", now).unwrap().to_rfc3339(), "2026-11-24T06:00:00+00:00");
        assert_eq!(parse_since("2026-11-24T09:00:00+03:00", now).unwrap().to_rfc3339(), "2026-11-24T06:00:00+00:00");
        assert!(parse_since("yesterday", now).unwrap_err().contains("yesterday"));
    }
}
