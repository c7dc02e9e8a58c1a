//! Every documented field rule is refused with its code, mnemonic and the item's index.

use std::time::Duration;

use bridge_shared::comagic::Failure;
use bridge_shared::secret::Secret;
use bridge_tests::sandbox::Upload;
use serde_json::{json, Map, Value};

use super::*;

#[tokio::test]
async fn each_documented_chat_violation_is_refused_with_its_mnemonic_and_index() {
    let sandbox = sandbox().await;
    let (client, _) = comagic_client(Duration::from_secs(5));
    type Change = Box<dyn FnOnce(&mut Map<String, Value>)>;
    let cases: Vec<(&str, &str, Change)> = vec![
        (
            "required_parameter_missed",
            "start_date_time",
            Box::new(|i| {
                i.remove("start_date_time");
            }),
        ),
        (
            "invalid_date_time",
            "start_date_time",
            Box::new(|i| {
                i.insert("start_date_time".into(), json!("01.01.2026 10:00"));
            }),
        ),
        (
            "invalid_date_time",
            "start_date_time",
            Box::new(|i| {
                i.insert("start_date_time".into(), json!("2999-01-01 10:00:00"));
            }),
        ),
        (
            "required_parameter_missed",
            "status",
            Box::new(|i| {
                i.remove("status");
            }),
        ),
        (
            "invalid_parameter_value",
            "status",
            Box::new(|i| {
                i.insert("status".into(), json!("done"));
            }),
        ),
        (
            "invalid_parameter_value",
            "initiator",
            Box::new(|i| {
                i.insert("initiator".into(), json!("robot"));
            }),
        ),
        (
            "required_parameter_missed",
            "phone",
            Box::new(|i| {
                i.remove("phone");
            }),
        ),
        (
            "invalid_parameter_value",
            "phone",
            Box::new(|i| {
                i.insert("phone".into(), json!("+7 912 345"));
            }),
        ),
        (
            "required_parameter_missed",
            "visitor_session_id",
            Box::new(|i| {
                i.remove("campaign_id");
            }),
        ),
        (
            "invalid_parameter_value",
            "campaign_id",
            Box::new(|i| {
                i.insert("campaign_id".into(), json!(-1));
            }),
        ),
        (
            "entity_not_found",
            "campaign_id",
            Box::new(|i| {
                i.insert("campaign_id".into(), json!(999));
            }),
        ),
        (
            "entity_not_found",
            "visitor_session_id",
            Box::new(|i| {
                i.remove("campaign_id");
                i.insert("visitor_session_id".into(), json!(12345));
            }),
        ),
        (
            "entity_not_found",
            "site_id",
            Box::new(|i| {
                i.remove("campaign_id");
                i.insert("site_id".into(), json!(4));
            }),
        ),
        (
            "entity_not_found",
            "source_id",
            Box::new(|i| {
                i.insert("source_id".into(), json!(4));
            }),
        ),
        (
            "invalid_parameters_combination",
            "site_id",
            Box::new(|i| {
                i.insert("site_id".into(), json!(78));
            }),
        ),
        (
            "unexpected_parameters",
            "colour",
            Box::new(|i| {
                i.insert("colour".into(), json!("red"));
            }),
        ),
        (
            "required_parameter_missed",
            "messages",
            Box::new(|i| {
                i.remove("messages");
            }),
        ),
        (
            "required_parameter_missed",
            "messages.1.employee_id",
            Box::new(|i| {
                i["messages"][1].as_object_mut().unwrap().remove("employee_id");
            }),
        ),
        (
            "entity_not_found",
            "messages.1.employee_id",
            Box::new(|i| {
                i["messages"][1]["employee_id"] = json!(7);
            }),
        ),
        (
            "invalid_parameter_value",
            "messages.0.source",
            Box::new(|i| {
                i["messages"][0]["source"] = json!("bot");
            }),
        ),
        (
            "data_type_error",
            "ext_id",
            Box::new(|i| {
                i.insert("ext_id".into(), json!(5));
            }),
        ),
    ];
    for (mnemonic, field, change) in cases {
        let got = call(&client, &sandbox, "upload.chats", "chats", batch_with(valid_chat, change)).await;
        match got {
            Err(Failure::Item { mnemonic: m, index, field: f, .. }) => {
                assert_eq!((m, index), (mnemonic, Some(1)), "{field}");
                assert_eq!(f.as_deref(), Some(format!("chats.1.{field}").as_str()));
            }
            other => panic!("{mnemonic} {field}: {other:?}"),
        }
    }
    assert!(sandbox.stored("acme", Upload::Chats).is_empty(), "a refused request stores nothing");
}

#[tokio::test]
async fn offline_rules_and_request_level_rules() {
    let sandbox = sandbox().await;
    let (client, _) = comagic_client(Duration::from_secs(5));
    let minus_one_without_site = batch_with(valid_offline, |i| {
        i.insert("campaign_id".into(), json!(-1));
    });
    let got = call(&client, &sandbox, "upload.offline_messages", "offline_messages", minus_one_without_site).await;
    assert!(matches!(got, Err(Failure::Item { mnemonic: "required_parameter_missed", index: Some(1), .. })), "{got:?}");
    let minus_one_with_site = batch_with(valid_offline, |i| {
        i.insert("campaign_id".into(), json!(-1));
        i.insert("site_id".into(), json!(77));
    });
    assert!(call(&client, &sandbox, "upload.offline_messages", "offline_messages", minus_one_with_site).await.is_ok());

    let too_many: Vec<Value> = (0..51).map(|i| valid_chat(&format!("many-{i}"))).collect();
    let got = call(&client, &sandbox, "upload.chats", "chats", too_many).await;
    assert!(matches!(got, Err(Failure::Item { mnemonic: "data_limit_exceeded", index: None, .. })), "{got:?}");
    let fifty: Vec<Value> = (0..50).map(|i| valid_chat(&format!("fifty-{i}"))).collect();
    let ok = call(&client, &sandbox, "upload.chats", "chats", fifty).await.unwrap();
    assert_eq!(ok["data"].as_array().unwrap().len(), 50, "one id per item, in order");

    let got = client.call(sandbox.url(), &Secret::new(TOKEN), "get.nothing", Map::new(), None).await;
    assert!(matches!(got, Err(Failure::Request { mnemonic: "method_not_found", .. })), "{got:?}");
}
