//! A search of one integration's journeys: by event id, Verbox dialog id, the visitor's phone or
//! e-mail, a time range and how they ended; newest first, a page at a time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use super::record::bounded;
use super::record::{Journey, Keys, DEAD_LETTERED, DELIVERED};

/// A page holds at most this many journeys.
pub const MAX_LIMIT: usize = 100;
/// A page reads at most this many index entries (a rare outcome over a long range would otherwise
/// read them all in one request); past it the page ends early with a cursor to go on from.
pub const SCANNED_PER_PAGE: usize = 5_000;

/// How a journey stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Delivered,
    DeadLettered,
    /// Neither yet.
    OnItsWay,
}

impl Outcome {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            DELIVERED => Some(Outcome::Delivered),
            DEAD_LETTERED => Some(Outcome::DeadLettered),
            "on_its_way" => Some(Outcome::OnItsWay),
            _ => None,
        }
    }

    fn of(journey: &Journey) -> Self {
        match journey.end.as_deref() {
            Some(DELIVERED) => Outcome::Delivered,
            Some(_) => Outcome::DeadLettered,
            None => Outcome::OnItsWay,
        }
    }
}

/// Where the previous page stopped: journeys older than this one come next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Accepted at, in milliseconds since 1970.
    pub stamp: u64,
    pub event_id: String,
}

impl Cursor {
    /// As a page gives it: `<stamp>.<event id>`.
    pub fn parse(text: &str) -> Option<Self> {
        let (stamp, event_id) = text.split_once('.')?;
        let event_id = bounded(event_id)?;
        Some(Cursor { stamp: stamp.parse().ok()?, event_id })
    }

    pub fn to_text(&self) -> String {
        format!("{}.{}", self.stamp, self.event_id)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Query {
    pub integration: String,
    pub event_id: Option<String>,
    pub dialog: Option<String>,
    /// A phone or e-mail as typed; hashed by the store that answers.
    pub contact: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub outcome: Option<Outcome>,
    pub before: Option<Cursor>,
    pub limit: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Page {
    pub events: Vec<Journey>,
    /// Where the next page starts; none when this one is the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Cursor>,
}

impl Query {
    /// The index key that narrows the search, if any (an event id is looked up directly).
    pub fn lookup(&self, keys: &Keys) -> Option<String> {
        match (&self.dialog, &self.contact) {
            (Some(dialog), _) => Some(Keys::dialog(dialog)),
            // A contact that is neither phone nor e-mail matches nothing.
            (None, Some(contact)) => Some(keys.contact(contact).unwrap_or_else(|| "c:none".into())),
            (None, None) => None,
        }
    }

    /// The exclusive upper bound of the scan: the cursor, or just after `to`.
    pub fn upper(&self) -> Option<Cursor> {
        let to = self.to.map(|to| Cursor { stamp: to.timestamp_millis().max(0) as u64 + 1, event_id: String::new() });
        match (&self.before, to) {
            (Some(before), Some(to)) => Some(if before.stamp < to.stamp { before.clone() } else { to }),
            (before, to) => before.clone().or(to),
        }
    }

    /// Whether `journey` is one this query asks for (what an index cannot tell).
    pub fn matches(&self, journey: &Journey) -> bool {
        let s = &journey.summary;
        s.integration == self.integration
            && self.dialog.as_ref().is_none_or(|d| s.dialog_id.as_ref() == Some(d))
            && self.from.is_none_or(|from| s.accepted_at >= from)
            && self.to.is_none_or(|to| s.accepted_at <= to)
            && self.outcome.is_none_or(|o| o == Outcome::of(journey))
    }
}

/// The page of `events` (newest first, fetched one past `limit`): the extra one says there is a
/// next page, which starts after the last one kept.
pub fn paged(events: &mut Vec<Journey>, limit: usize) -> Page {
    let more = events.len() > limit;
    events.truncate(limit);
    let next = more.then(|| events.last()).flatten().map(|last| Cursor {
        stamp: last.summary.accepted_at.timestamp_millis().max(0) as u64,
        event_id: last.summary.event_id.clone(),
    });
    Page { events: std::mem::take(events), next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_wrote_and_refuses_garbage() {
        let cursor = Cursor { stamp: 1_700_000_000_000, event_id: "vb-1".into() };
        assert_eq!(Cursor::parse(&cursor.to_text()), Some(cursor));
        for bad in ["", "x.vb-1", "12", "-1.vb", &format!("1.{}", "a".repeat(201)), "1.a\u{0}b"] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_scan_stops_at_the_earlier_of_the_cursor_and_to() {
        let at = |ms| DateTime::from_timestamp_millis(ms).unwrap();
        let before = Cursor { stamp: 5_000, event_id: "b".into() };
        let q = Query { to: Some(at(9_000)), before: Some(before.clone()), ..Query::default() };
        assert_eq!(q.upper(), Some(before));
        let q = Query {
            to: Some(at(2_000)),
            before: Some(Cursor { stamp: 5_000, event_id: "b".into() }),
            ..Query::default()
        };
        assert_eq!(q.upper().map(|c| c.stamp), Some(2_001));
    }
}
