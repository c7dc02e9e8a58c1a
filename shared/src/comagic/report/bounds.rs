//! Times at and past the edges of what CoMagic takes, from the webhook through mapping to the
//! report window deliver asks when an upload is in doubt. A time there once panicked in
//! `report_window` (`NaiveDateTime - TimeDelta` overflowed) and stopped a tenant's deliveries.

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::report_window;
use crate::attribution::attribute;
use crate::event::{EventId, EventKind};
use crate::integrations::Integration;
use crate::mapping::tests::no_panic::any_message;
use crate::mapping::tests::{acme, map_at, msg, now};
use crate::mapping::{map_event, Item, MappingContext, Skip, DATE_TIME};
use crate::verbox::{parse_at, Horizon, VerboxEvent, EARLIEST};

/// Maps `event` as `integration` would, received at `received_at`, at `now`.
fn map_parsed(
    integration: &Integration,
    kind: EventKind,
    event: &VerboxEvent,
    received_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Item, Skip> {
    let event_id = EventId::derive(&integration.id, kind, event, b"");
    let cx = MappingContext {
        integration,
        event_id: &event_id,
        attribution: attribute(integration, event),
        received_at,
        now,
    };
    map_event(kind, event, cx)
}

/// `YYYY-MM-DD hh:mm:ss` with a four-digit year CoMagic can read, 1999 (2000 in a zone west of UTC)
/// to 9999.
fn assert_comagic_date(text: &str) -> Result<(), TestCaseError> {
    let read =
        NaiveDateTime::parse_from_str(text, DATE_TIME).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
    prop_assert!(text.len() == 19 && (1999..=9999).contains(&read.year()), "{}", text);
    Ok(())
}

#[test]
fn times_past_the_edges_are_not_kept_and_each_is_named() {
    let in_two_days = (now() + chrono::Duration::days(2)).format("%Y-%m-%d %H:%M:%S").to_string();
    let times = [
        json!("-262143-01-01 00:00:00"),
        json!("9999-12-31 23:59:59"),
        json!("1970-01-01 00:00:00"),
        json!(0),
        json!("1999-12-31T23:59:59Z"),
        json!(in_two_days),
    ];
    let mut messages: Vec<Value> =
        times.iter().map(|t| json!({"whoSend": "client", "text": "x", "dateTimeUTC": t})).collect();
    messages.push(json!({"whoSend": "client", "text": "x", "dateTime": "-262143-01-01 00:00:00"}));
    messages.push(msg("operator", "sound", "2026-03-01 09:00:00"));
    let body = json!({"data": {"client": {"phone": "89123456789"}, "dialog": {"id": 1, "messages": messages}}});
    let event = parse_at(body.to_string().as_bytes(), now()).unwrap();
    let named: Vec<String> = event.times_out_of_range.iter().map(|t| t.field.clone()).collect();
    let want: Vec<String> = (0..6)
        .map(|i| format!("dialog.messages[{i}].dateTimeUTC"))
        .chain(["dialog.messages[6].dateTime".to_owned()])
        .collect();
    assert_eq!(named, want);
    assert_eq!(event.times_out_of_range[0].to_string(), "`dialog.messages[0].dateTimeUTC` = -262143-01-01 00:00:00");
    assert!(event.messages[..7].iter().all(|m| m.utc_time.is_none() && m.local_time.is_none()));

    let Ok(Item::Chat(c)) = map_at(&acme(), EventKind::Chat, &body, now() - chrono::Duration::minutes(1), now()) else {
        panic!("the chat maps")
    };
    let dates: Vec<&str> = c.messages.iter().map(|m| m.date_time.as_str()).collect();
    assert_eq!(dates[..7], ["2026-03-01 14:59:00"; 7], "undated: the receipt time, in Moscow");
    assert_eq!(dates[7], "2026-03-01 12:00:00");
    let window = report_window(&[&Item::Chat(c)], now());
    assert_eq!(
        window,
        ("2026-02-28 14:59:00".into(), "2026-03-02 14:59:00".into()),
        "the start time, a day either way"
    );
}

#[test]
fn times_at_the_edges_are_kept() {
    let tomorrow = (now() + chrono::Duration::days(1)).format("%Y-%m-%d %H:%M:%S").to_string();
    let body = json!({"client": {"email": "a@b.example"}, "message": {"whoSend": "client", "text": "q",
                      "dateTimeUTC": "2000-01-01T00:00:00Z", "dateTime": tomorrow}});
    let event = parse_at(body.to_string().as_bytes(), now()).unwrap();
    assert_eq!(event.times_out_of_range, vec![]);
    assert_eq!(event.messages[0].utc_time.map(|t| t.get()), Some(EARLIEST));
    assert!(event.messages[0].local_time.is_some(), "now + 1 day is kept (mapping caps it at now)");
    let Ok(Item::Offline(o)) = map_at(&acme(), EventKind::Offline, &body, now(), now()) else { panic!() };
    assert_eq!(o.date_time, "2000-01-01 03:00:00");
    assert_eq!(report_window(&[&Item::Offline(o)], now()).0, "1999-12-31 03:00:00");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// Any accepted webhook, any clock: every time kept is in range, and in every IANA zone both
    /// kinds map to dates CoMagic reads and a report window that cannot panic.
    #[test]
    fn any_accepted_webhook_maps_and_gets_a_report_window_in_every_zone(
        messages in prop::collection::vec(any_message(), 0..4),
        question in any_message(),
        received in prop_oneof![any::<i64>(), Just(now().timestamp())],
        late in prop_oneof![0i64..=86_400 * 400, any::<i64>()],
    ) {
        let clock = |s: i64| DateTime::from_timestamp(s, 0).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let (received, now) = (clock(received), clock(received.saturating_add(late)));
        let mut integration = (*acme()).clone();
        for body in [
            json!({"data": {"client": {"phone": "89123456789"}, "dialog": {"id": 1, "messages": messages}}}),
            json!({"client": {"email": "a@b.example"}, "message": question}),
        ] {
            let event = parse_at(body.to_string().as_bytes(), received).unwrap();
            let horizon = Horizon::at(received);
            for t in event.messages.iter().flat_map(|m| [m.utc_time, m.local_time]).flatten() {
                prop_assert_eq!(horizon.admit(t.get()), Some(t));
            }
            for tz in chrono_tz::TZ_VARIANTS {
                integration.timezone = tz;
                for kind in EventKind::ALL {
                    let Ok(item) = map_parsed(&integration, kind, &event, received, now) else { continue };
                    assert_comagic_date(item.date_time())?;
                    let (from, till) = report_window(&[&item], now);
                    assert_comagic_date(&from)?;
                    assert_comagic_date(&till)?;
                    prop_assert!(from < till, "{} {} {}", tz, from, till);
                }
            }
        }
    }
}
