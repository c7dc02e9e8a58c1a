//! Asking CoMagic which of some items it already has: `get.chats_report` and
//! `get.offline_messages_report` list uploaded items with their `ext_id`.
//!
//! deliver asks before it sends an event whose earlier upload is in doubt (an answer lost after
//! the request went out, a replica killed between CoMagic's answer and its ledger write): the doubt
//! then costs one report call instead of a second copy of the chat in the tenant's analytics.
//! How the reports are filtered is our reading of the public documentation (docs/foreign-apis.md):
//! `date_from` and `date_till` are required, and `filter` takes `{field, operator, value}`
//! conditions joined by `condition`.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde_json::{json, Map, Value};

use super::{ComagicClient, Failure, Limits};
use crate::event::EventKind;
use crate::mapping::{Item, DATE_TIME};
use crate::secret::Secret;
use crate::verbox::{Horizon, VerboxTime};

pub fn report_method(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Chat => "get.chats_report",
        EventKind::Offline => "get.offline_messages_report",
    }
}

/// What a report said: the asked-for ext_ids CoMagic has, and the quota it left.
#[derive(Debug, Clone, PartialEq)]
pub struct Uploaded {
    pub ext_ids: HashSet<String>,
    pub limits: Option<Limits>,
}

impl ComagicClient {
    /// Which of `items` (one kind, at most a batch) CoMagic already has, by `ext_id`.
    pub async fn uploaded(
        &self,
        endpoint: &str,
        token: &Secret,
        kind: EventKind,
        items: &[&Item],
    ) -> Result<Uploaded, Failure> {
        #[cfg(feature = "fault-injection")]
        crate::fault_injection::panic_if_marked(items);
        let (from, till) = report_window(items, Utc::now());
        let conditions: Vec<Value> =
            items.iter().map(|i| json!({"field": "ext_id", "operator": "=", "value": i.ext_id()})).collect();
        let mut params = Map::new();
        params.insert("date_from".into(), from.into());
        params.insert("date_till".into(), till.into());
        params.insert("fields".into(), json!(["id", "ext_id"]));
        params.insert("filter".into(), json!({"filters": conditions, "condition": "or"}));
        params.insert("limit".into(), json!(10_000));
        let success = self.call(endpoint, token, report_method(kind), params, None).await?;
        let Some(rows) = success.result.get("data").and_then(Value::as_array) else {
            return Err(Failure::Transient { label: "bad_response", reason: "a report without `data`".into() });
        };
        let asked: HashSet<&str> = items.iter().map(|i| i.ext_id()).collect();
        let ext_ids = rows
            .iter()
            .filter_map(|row| row.get("ext_id").and_then(Value::as_str))
            .filter(|id| asked.contains(id))
            .map(str::to_owned)
            .collect();
        Ok(Uploaded { ext_ids, limits: success.limits })
    }
}

/// The dates a report is asked for: the items' own, widened by a day either way, because the
/// account's clock and zone may place an item hours away from the time we gave it. Each date is
/// brought into [`VerboxTime`]'s range first (mapping wrote it from one, but an item's text could say
/// anything), and the day is added with saturating arithmetic: no item can make this panic.
fn report_window(items: &[&Item], now: DateTime<Utc>) -> (String, String) {
    let horizon = Horizon::at(now);
    let dates: Vec<VerboxTime> = items
        .iter()
        .filter_map(|i| NaiveDateTime::parse_from_str(i.date_time(), DATE_TIME).ok())
        .map(|t| horizon.clamp(t))
        .collect();
    let now = VerboxTime::now(now);
    let earliest = dates.iter().min().copied().unwrap_or(now);
    let latest = dates.iter().max().copied().unwrap_or(now);
    let day = TimeDelta::days(1);
    (earliest.shifted(-day).format(DATE_TIME).to_string(), latest.shifted(day).format(DATE_TIME).to_string())
}

#[cfg(test)]
mod bounds;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{AttributionFields, Contact, OfflineItem};

    fn offline(ext_id: &str, date_time: &str) -> Item {
        Item::Offline(OfflineItem {
            ext_id: ext_id.into(),
            date_time: date_time.into(),
            contact: Contact { name: None, phone: None, email: Some("a@example.com".into()) },
            message: None,
            form_name: "Verbox",
            attribution: AttributionFields::default(),
        })
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z").unwrap().to_utc()
    }

    #[test]
    fn the_window_spans_the_items_and_a_day_either_side() {
        let (a, b) = (offline("a", "2026-11-20 10:00:00"), offline("b", "2026-11-02 23:30:00"));
        assert_eq!(report_window(&[&a, &b], now()), ("2026-11-01 23:30:00".into(), "2026-11-21 10:00:00".into()));
        assert_eq!(report_window(&[], now()), ("2026-11-24 12:00:00".into(), "2026-11-26 12:00:00".into()));
    }

    /// An item's text is not bounded by its type: whatever it says, the window is asked for
    /// within the range, and nothing panics (it did: `NaiveDateTime - TimeDelta` overflowed).
    #[test]
    fn dates_at_the_edges_of_the_calendar_give_a_window_in_range() {
        for date in ["-262143-01-01 00:00:00", "+262142-12-31 23:59:59", "1970-01-01 00:00:00", "9999-12-31 23:59:59"] {
            let item = offline("a", date);
            let (from, till) = report_window(&[&item], now());
            assert!(
                from.as_str() >= "1999-12-31 00:00:00" && till.as_str() <= "2026-11-27 12:00:00",
                "{date}: {from} {till}"
            );
        }
        for clock in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            let (from, till) = report_window(&[&offline("a", "-262143-01-01 00:00:00")], clock);
            assert!(from.starts_with("1999-12-31") && till.len() == 19, "{from} {till}");
        }
    }
}
