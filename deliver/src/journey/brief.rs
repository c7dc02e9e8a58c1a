//! A journey that is nothing but its delivery at the first try (the common case), as the tail of
//! its sled ledger entry holds it: short keys, the step's fields flat, and what the entry's key
//! and the index say left out. Half the bytes of the journey's JSON, and no journey is built to
//! write it: on a machine where a sled write costs about a nanosecond a byte, that is most of what
//! keeping the journey costs a delivery.

use std::borrow::Cow;

use bridge_shared::trace::Trace;
use chrono::DateTime;
use serde::{Deserialize, Serialize};

use super::record::{Entry, Journey, Summary};

/// The tail's first byte when a brief follows (a whole journey's JSON starts with `{`).
pub const MARK: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Brief<'a> {
    #[serde(borrow, rename = "i")]
    integration: Cow<'a, str>,
    #[serde(borrow, rename = "k")]
    kind: Cow<'a, str>,
    /// Accepted at, µs since 1970.
    #[serde(rename = "a")]
    accepted_us: i64,
    #[serde(borrow, rename = "b", default, skip_serializing_if = "Option::is_none")]
    accepted_by: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "d", default, skip_serializing_if = "Option::is_none")]
    dialog_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "c", default, skip_serializing_if = "Option::is_none")]
    contact: Option<Cow<'a, str>>,
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    item: Option<Cow<'a, serde_json::Value>>,
    /// The step: delivered at (µs), its rule, CoMagic's id, the items in the call, the replica,
    /// what it said.
    #[serde(rename = "t")]
    at_us: i64,
    #[serde(borrow, rename = "r", default, skip_serializing_if = "Option::is_none")]
    rule: Option<Cow<'a, str>>,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    comagic_id: Option<u64>,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    items: Option<usize>,
    #[serde(borrow, rename = "p", default, skip_serializing_if = "Option::is_none")]
    replica: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "e", default, skip_serializing_if = "Option::is_none")]
    error: Option<Cow<'a, str>>,
}

fn micros(at: DateTime<chrono::Utc>) -> i64 {
    at.timestamp_micros()
}

/// Writes `entry` (a `delivered` step, its event's first) as a brief after [`MARK`].
pub fn encode(entry: &Entry, out: &mut Vec<u8>) {
    let (s, t) = (&entry.summary, &entry.step);
    fn cow(v: &Option<String>) -> Option<Cow<'_, str>> {
        v.as_deref().map(Cow::Borrowed)
    }
    let brief = Brief {
        integration: Cow::Borrowed(&s.integration),
        kind: Cow::Borrowed(&s.kind),
        accepted_us: micros(s.accepted_at),
        accepted_by: cow(&s.accepted_by),
        dialog_id: cow(&s.dialog_id),
        contact: cow(&s.contact),
        item: s.item.as_ref().map(Cow::Borrowed),
        at_us: micros(t.at),
        rule: cow(&t.rule),
        comagic_id: t.comagic_id,
        items: t.items,
        replica: cow(&t.replica),
        error: cow(&t.error),
    };
    out.push(MARK);
    let _ = serde_json::to_writer(out, &brief);
}

/// The journey of `event_id` a brief (the bytes after [`MARK`]) holds.
pub fn decode(event_id: &str, bytes: &[u8]) -> Option<Journey> {
    let b: Brief<'_> = serde_json::from_slice(bytes).ok()?;
    let owned = |v: Option<Cow<'_, str>>| v.map(Cow::into_owned);
    let summary = Summary {
        event_id: event_id.to_owned(),
        integration: b.integration.into_owned(),
        kind: b.kind.into_owned(),
        accepted_at: DateTime::from_timestamp_micros(b.accepted_us)?,
        accepted_by: owned(b.accepted_by),
        dialog_id: owned(b.dialog_id),
        contact: owned(b.contact),
        item: b.item.map(Cow::into_owned),
        lookups: Vec::new(),
        webhook: None,
    };
    let step = Trace {
        at: DateTime::from_timestamp_micros(b.at_us)?,
        rule: owned(b.rule),
        comagic_id: b.comagic_id,
        items: b.items,
        replica: owned(b.replica),
        error: owned(b.error),
        ..Trace::new("", "", super::record::DELIVERED)
    };
    let mut journey = Journey::new(summary);
    journey.push(step);
    Some(journey)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::journey::Keys;

    #[test]
    fn a_brief_reads_back_as_the_journey_it_was_written_from() {
        let keys = Keys::new(b"k");
        let mut entry = Entry::for_tests(&keys, "vb-1", 3, "42", "79120000001", "delivered");
        entry.step.rule = Some("session".into());
        entry.step.comagic_id = Some(7);
        entry.step.items = Some(50);
        Arc::make_mut(&mut entry.summary).item = Some(serde_json::json!({"campaign_id": 5001, "status": "\u{0}\"x"}));
        let mut bytes = Vec::new();
        encode(&entry, &mut bytes);
        assert_eq!(bytes[0], MARK);
        let journey = decode("vb-1", &bytes[1..]).unwrap();
        let mut expected = Journey::new(Summary { lookups: Vec::new(), ..(*entry.summary).clone() });
        expected.push(entry.step.clone());
        let at = |j: &Journey| (j.summary.accepted_at.timestamp_micros(), j.steps[0].at.timestamp_micros());
        assert_eq!(at(&journey), at(&expected));
        let mut journey = journey;
        (journey.summary.accepted_at, journey.steps[0].at) = (expected.summary.accepted_at, expected.steps[0].at);
        assert_eq!(journey, expected);
        assert!(decode("vb-1", b"not json").is_none());
    }
}
