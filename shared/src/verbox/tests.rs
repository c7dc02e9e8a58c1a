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

/// Out-of-range times are named by where they were sent, in either envelope; the rest are kept.
#[test]
fn times_out_of_range_are_named_by_their_field() {
    let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().to_utc();
    let body = json!({"client": {}, "message": {"dateTimeUTC": "1970-01-01 00:00:00", "dateTime": "2026-03-01 15:00:00"},
                      "messages": [{"dateTime": "yesterday"}, {"dateTimeUTC": i64::MAX}, {"dateTimeUTC": "2026-03-02 12:00:00"}]});
    let e = parse_at(body.to_string().as_bytes(), now).unwrap();
    let named: Vec<String> = e.times_out_of_range.iter().map(ToString::to_string).collect();
    assert_eq!(named, ["`message.dateTimeUTC` = 1970-01-01 00:00:00"], "i64::MAX seconds is no time chrono has");
    assert_eq!(e.trigger.unwrap().local_time.map(|t| t.to_string()).as_deref(), Some("2026-03-01 15:00:00"));
    assert_eq!(e.messages[2].utc_time.map(|t| t.to_string()).as_deref(), Some("2026-03-02 12:00:00"));
    let far = json!({"client": {}, "messages": [{}, {"dateTimeUTC": 8_000_000_000_000i64}]});
    let e = parse_at(far.to_string().as_bytes(), now).unwrap();
    assert_eq!(e.times_out_of_range[0].field, "messages[1].dateTimeUTC");
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
