use super::*;
use crate::attribution::{attribute, Rule};
use crate::integrations::{tests::SAMPLE, Integrations};
use serde_json::{json, Value};

pub(crate) fn acme() -> std::sync::Arc<Integration> {
    Integrations::from_toml(SAMPLE, &Default::default()).unwrap().get("acme-shop").unwrap().clone()
}

pub(crate) fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().into()
}

fn map(kind: EventKind, body: Value) -> Result<Item, Skip> {
    map_at(&acme(), kind, &body, now() - chrono::Duration::minutes(1), now())
}

/// Maps `body` for `integration` as received at `received_at`, at `now`.
pub(crate) fn map_at(
    integration: &Integration,
    kind: EventKind,
    body: &Value,
    received_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Item, Skip> {
    let event = crate::verbox::parse_at(body.to_string().as_bytes(), received_at).unwrap();
    let event_id = EventId::derive("acme-shop", kind, &event, b"");
    let cx = MappingContext {
        integration,
        event_id: &event_id,
        attribution: attribute(integration, &event),
        received_at,
        now,
    };
    map_event(kind, &event, cx)
}

fn chat(messages: Value) -> ChatItem {
    chat_with_client(json!({"phone": "89123456789"}), messages)
}

fn chat_with_client(client: Value, messages: Value) -> ChatItem {
    match map(EventKind::Chat, json!({"data": {"client": client, "dialog": {"id": 1, "messages": messages}}})) {
        Ok(Item::Chat(c)) => c,
        other => panic!("expected a chat, got {other:?}"),
    }
}

pub(crate) fn msg(who: &str, text: &str, utc: &str) -> Value {
    json!({"whoSend": who, "text": text, "dateTimeUTC": utc})
}

#[test]
fn chat_messages_are_mapped_in_order_with_sources_and_employee() {
    let c = chat(json!([
        msg("client", "hello", "2026-03-01 09:00:00"),
        msg("operator", "hi, how can I help", "2026-03-01 09:01:00"),
        {"whoSend": "operator", "text": "internal", "messageType": "comment", "dateTimeUTC": "2026-03-01 09:02:00"},
        {"whoSend": "operator", "text": "auto", "messageType": "autoMessage", "dateTimeUTC": "2026-03-01 09:03:00"},
    ]));
    let got: Vec<_> = c.messages.iter().map(|m| (m.source, m.message.as_str(), m.employee_id)).collect();
    assert_eq!(
        got,
        vec![("visitor", "hello", None), ("operator", "hi, how can I help", Some(101)), ("system", "auto", None)]
    );
    assert_eq!(c.status, "succeed");
    assert_eq!(c.initiator, Some("visitor"));
    assert_eq!(c.ext_id.len(), 35);
}

#[test]
fn times_convert_from_utc_to_the_account_zone() {
    let c = chat(json!([msg("client", "hello", "2026-03-01 09:00:00")]));
    assert_eq!(c.start_date_time, "2026-03-01 12:00:00", "Moscow is UTC+3");
    assert_eq!(c.messages[0].date_time, "2026-03-01 12:00:00");
}

#[test]
fn local_time_is_used_as_is_without_utc() {
    let c = chat(json!([{"whoSend": "client", "text": "x", "dateTime": "2026-03-01 10:30:00"}]));
    assert_eq!(c.start_date_time, "2026-03-01 10:30:00");
}

#[test]
fn times_are_never_in_the_future() {
    let c = chat(json!([msg("client", "from the future", "2026-03-01 13:00:00")]));
    assert_eq!(c.start_date_time, "2026-03-01 15:00:00", "capped at now in Moscow");
}

#[test]
fn a_message_without_time_takes_the_previous_or_the_receipt_time() {
    let c = chat(
        json!([{"whoSend": "client", "text": "a"}, msg("operator", "b", "2026-03-01 09:00:00"), {"whoSend": "client", "text": "c"}]),
    );
    let times: Vec<_> = c.messages.iter().map(|m| m.date_time.as_str()).collect();
    assert_eq!(times, vec!["2026-03-01 14:59:00", "2026-03-01 12:00:00", "2026-03-01 12:00:00"]);
}

#[test]
fn unanswered_chat_is_lost() {
    assert_eq!(chat(json!([msg("client", "anyone?", "2026-03-01 09:00:00")])).status, "lost");
    let only_auto = chat(
        json!([{"whoSend": "operator", "text": "hi", "messageType": "autoMessage"}, msg("client", "?", "2026-03-01 09:00:00")]),
    );
    assert_eq!(only_auto.status, "lost", "an automatic invitation is not an answer");
}

#[test]
fn initiator_comes_from_the_first_message() {
    let auto = chat(
        json!([{"whoSend": "operator", "text": "hi", "messageType": "autoMessage"}, msg("client", "?", "2026-03-01 09:00:00")]),
    );
    assert_eq!(auto.initiator, Some("autoinvite"));
    let op = chat(json!([msg("operator", "hi", "2026-03-01 09:00:00")]));
    assert_eq!(op.initiator, Some("operator"));
}

#[test]
fn attachments_only_become_a_line_naming_them() {
    let c = chat(
        json!([{"whoSend": "client", "content": {"attachments": [{"name": "photo.jpg"}, {"url": "https://x/doc.pdf"}]}}]),
    );
    assert_eq!(c.messages[0].message, "Вложения: photo.jpg, https://x/doc.pdf");
}

#[test]
fn contacts_are_normalized() {
    let c = chat_with_client(
        json!({"name": "Ivan", "phone": "+7 (912) 345-67-89", "email": " IVAN@X.RU "}),
        json!([msg("client", "x", "2026-03-01 09:00:00")]),
    );
    assert_eq!(
        c.contact,
        Contact { name: Some("Ivan".into()), phone: Some("79123456789".into()), email: Some("ivan@x.ru".into()) }
    );
    let bad_phone = chat_with_client(
        json!({"phone": "123", "email": "a@b.ru"}),
        json!([msg("client", "x", "2026-03-01 09:00:00")]),
    );
    assert_eq!(bad_phone.contact.phone, None);
}

#[test]
fn no_contact_and_empty_chat_are_skipped() {
    let no_contact = map(
        EventKind::Chat,
        json!({"data": {"client": {"phone": "12", "email": "nope"}, "dialog": {"messages": [msg("client", "x", "2026-03-01 09:00:00")]}}}),
    );
    assert_eq!(no_contact, Err(Skip::NoContact));
    let empty = map(
        EventKind::Chat,
        json!({"data": {"client": {"phone": "89123456789"}, "dialog": {"messages": [{"whoSend": "operator", "text": "note", "messageType": "comment"}]}}}),
    );
    assert_eq!(empty, Err(Skip::EmptyChat));
    let offline = map(EventKind::Offline, json!({"client": {}, "message": {"whoSend": "client", "text": "call me"}}));
    assert_eq!(offline, Err(Skip::NoContact));
}

#[test]
fn attribution_fields_follow_the_rule() {
    let session = chat_with_client(
        json!({"phone": "9123456789", "customData": {"comagic_session_id": "555"}}),
        json!([msg("client", "x", "2026-03-01 09:00:00")]),
    );
    assert_eq!(session.attribution, AttributionFields { visitor_session_id: Some(555), ..Default::default() });
    let whatsapp = chat_with_client(
        json!({"phone": "9123456789", "source": {"type": {"id": "whatsapp"}}}),
        json!([msg("client", "x", "2026-03-01 09:00:00")]),
    );
    assert_eq!(
        whatsapp.attribution,
        AttributionFields { site_id: Some(77), source_id: Some(13), ..Default::default() }
    );
    let default = chat(json!([msg("client", "x", "2026-03-01 09:00:00")]));
    assert_eq!(default.attribution, AttributionFields { campaign_id: Some(5001), ..Default::default() });
    assert_eq!(Rule::Default.as_str(), "default");
}

#[test]
fn offline_request_maps_question_and_form() {
    let item = map(
        EventKind::Offline,
        json!({
            "eventId": "newOfflineQuestion",
            "data": {"client": {"name": "Anna", "email": "anna@x.ru"}, "messages": [
                msg("client", "first", "2026-03-01 08:00:00"), msg("client", "what is the price?", "2026-03-01 09:00:00")
            ]}
        }),
    );
    let Ok(Item::Offline(o)) = item else { panic!("{item:?}") };
    assert_eq!(o.message.as_deref(), Some("what is the price?"));
    assert_eq!(o.date_time, "2026-03-01 12:00:00");
    assert_eq!(o.form_name, "Verbox");
    assert_eq!(o.contact.email.as_deref(), Some("anna@x.ru"));
    let wire = serde_json::to_value(Item::Offline(o)).unwrap();
    assert_eq!(wire["campaign_id"], 5001);
    assert!(wire.get("phone").is_none(), "absent fields are left out, not null");
}

#[test]
fn chat_item_wire_shape() {
    let c = chat(json!([msg("client", "x", "2026-03-01 09:00:00")]));
    let wire = serde_json::to_value(Item::Chat(c)).unwrap();
    let mut keys: Vec<_> = wire.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec!["campaign_id", "ext_id", "initiator", "messages", "phone", "start_date_time", "status"]);
}

/// Any time a webhook can carry, in every IANA zone, maps without a panic (a panic here would stop
/// deliver's consumer for every tenant).
pub(crate) mod no_panic {
    use super::*;
    use proptest::prelude::*;

    /// Any time a sender may write: unix seconds and years anywhere in chrono's calendar, as numbers
    /// or strings, in each form the parser reads.
    pub(crate) fn any_time() -> impl Strategy<Value = Value> {
        prop_oneof![
            (-262_144i32..=262_143, 1u32..=12, 1u32..=28, any::<bool>()).prop_map(|(y, mo, d, t)| Value::from(
                format!("{y:+}-{mo:02}-{d:02}{}00:00:00", if t { 'T' } else { ' ' })
            )),
            prop::sample::select(vec![
                "-262143-01-01 00:00:00",
                "+262142-12-31 23:59:59",
                "9999-12-31 23:59:59",
                "0000-01-01 00:00:00",
                "1970-01-01 00:00:00",
                "1999-12-31 23:59:59",
                "2000-01-01 00:00:00",
                "1999-12-31T23:59:59Z",
                "1999-12-31T23:59:59-14:00",
                "2000-01-01T00:00:00+14:00",
            ])
            .prop_map(Value::from),
            (-3 * 86_400i64..=3 * 86_400).prop_map(|s| Value::from(now().timestamp() + s)),
            any::<i64>().prop_map(Value::from),
            any::<i64>().prop_map(|s| Value::from(s.to_string())),
            (0i32..=9999, 1u32..=12, 1u32..=28, 0u32..24, 0u32..60)
                .prop_map(|(y, mo, d, h, mi)| { Value::from(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:00")) }),
            (0i32..=9999, -23i32..=23).prop_map(|(y, off)| {
                let sign = if off < 0 { '-' } else { '+' };
                Value::from(format!("{y:04}-12-31T23:59:59{sign}{:02}:59", off.abs()))
            }),
            Just(Value::Null),
        ]
    }

    pub(crate) fn any_message() -> impl Strategy<Value = Value> {
        (any_time(), any_time(), prop::sample::select(vec!["client", "operator", "bot"]), any::<bool>()).prop_map(
            |(local, utc, who, auto)| {
                json!({"whoSend": who, "text": "hi", "dateTime": local, "dateTimeUTC": utc,
                       "messageType": if auto { "autoMessage" } else { "text" }})
            },
        )
    }

    /// Any JSON value: what a webhook may put where a field is expected.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::from),
            "[0-9 +()-]{0,18}".prop_map(Value::from),
            any_time(),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(
                    prop::sample::select(vec!["id", "type", "text", "name", "value", "comagic_session_id"]),
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            ]
        })
    }

    /// A webhook of either envelope with any value in each field deliver reads.
    fn any_webhook() -> impl Strategy<Value = Value> {
        (prop::collection::vec(any_json(), 12), any::<bool>(), any::<bool>()).prop_map(|(v, dialog, reachable)| {
            // Half of them with a phone CoMagic takes, so the mapping goes past the contact check.
            let phone = if reachable { json!("+7 912 345-67-89") } else { v[2].clone() };
            let client = json!({"clientId": v[0], "name": v[1], "phone": phone, "email": v[3],
                                "customData": v[4], "source": v[5], "utm": v[6]});
            let message = json!({"whoSend": v[7], "text": v[8], "dateTime": v[9], "dateTimeUTC": v[10],
                                 "messageType": v[11], "content": {"attachments": v[11]}});
            if dialog {
                json!({"data": {"client": client, "dialog": {"id": v[0], "messages": [message.clone(), message]}}})
            } else {
                json!({"client": client, "message": message})
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        /// Any webhook that parses (what ingest accepts), both kinds, in any zone.
        #[test]
        fn any_parsed_webhook_maps_in_any_zone_without_panicking(
            zone in 0..chrono_tz::TZ_VARIANTS.len(),
            body in any_webhook(),
        ) {
            let mut integration = (*acme()).clone();
            integration.timezone = chrono_tz::TZ_VARIANTS[zone];
            if crate::verbox::parse(body.to_string().as_bytes()).is_ok() {
                for kind in EventKind::ALL {
                    let _ = map_at(&integration, kind, &body, now(), now());
                }
            }
        }

        #[test]
        fn any_accepted_webhook_maps_in_any_zone_without_panicking(
            zone in 0..chrono_tz::TZ_VARIANTS.len(),
            messages in prop::collection::vec(any_message(), 0..4),
            question in any_message(),
            received in any::<i64>(),
            now in any::<i64>(),
        ) {
            let mut integration = (*acme()).clone();
            integration.timezone = chrono_tz::TZ_VARIANTS[zone];
            let clock = |s: i64| DateTime::from_timestamp(s, 0).unwrap_or(DateTime::<Utc>::MIN_UTC);
            for (kind, body) in [
                (EventKind::Chat, json!({"data": {"client": {"phone": "89123456789"}, "dialog": {"id": 1, "messages": messages}}})),
                (EventKind::Offline, json!({"client": {"email": "a@b.example"}, "message": question})),
            ] {
                let _ = map_at(&integration, kind, &body, clock(received), clock(now));
            }
        }
    }
}
