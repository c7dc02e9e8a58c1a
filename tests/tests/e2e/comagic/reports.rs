//! Asking CoMagic what it already has: the sandbox's reports, and the client's reading of them,
//! including after an answer that was lost once the upload had been stored.

use std::time::Duration;

use bridge_shared::comagic::Failure;
use bridge_shared::event::EventKind;
use bridge_shared::mapping::{AttributionFields, Contact, Item, OfflineItem};
use bridge_shared::secret::Secret;
use bridge_tests::sandbox::{Fault, FaultKind};
use serde_json::{json, Map, Value};

use super::{call, sandbox, valid_offline, TOKEN};
use crate::helpers::comagic_client;

fn offline_item(ext_id: &str) -> Item {
    Item::Offline(OfflineItem {
        ext_id: ext_id.into(),
        date_time: "2026-01-01 10:00:00".into(),
        contact: Contact { name: None, phone: None, email: Some("a@b.ru".into()) },
        message: Some("call me".into()),
        form_name: "Verbox",
        attribution: AttributionFields { campaign_id: Some(5001), ..Default::default() },
    })
}

#[tokio::test]
async fn an_upload_whose_answer_was_lost_is_found_in_the_report_by_ext_id() {
    let sandbox = sandbox().await;
    let (client, _) = comagic_client(Duration::from_secs(5));
    let upload =
        |id: &str| call(&client, &sandbox, "upload.offline_messages", "offline_messages", vec![valid_offline(id)]);
    upload("r-1").await.unwrap();
    sandbox.add_fault(Fault { kind: FaultKind::AnswerLost, calls: Some(1), ..Default::default() });
    let lost = upload("r-2").await.unwrap_err();
    assert!(matches!(lost, Failure::Transient { label: "http_5xx", .. }), "{lost:?}");
    assert!(lost.may_have_arrived(), "a 502 leaves the upload in doubt");

    let asked = [offline_item("r-1"), offline_item("r-2"), offline_item("r-3")];
    let refs: Vec<&Item> = asked.iter().collect();
    let found = client.uploaded(sandbox.url(), &Secret::new(TOKEN), EventKind::Offline, &refs).await.unwrap();
    let mut ids: Vec<&str> = found.ext_ids.iter().map(String::as_str).collect();
    ids.sort();
    assert_eq!(ids, ["r-1", "r-2"], "stored before the answer was lost; r-3 never sent");
    assert!(found.limits.is_some(), "a report answer carries metadata.limits");
    let chats = client.uploaded(sandbox.url(), &Secret::new(TOKEN), EventKind::Chat, &refs).await.unwrap();
    assert!(chats.ext_ids.is_empty(), "the chats report lists chats only");
}

#[tokio::test]
async fn the_sandbox_report_refuses_what_the_documented_reading_does_not_allow() {
    let sandbox = sandbox().await;
    let (client, _) = comagic_client(Duration::from_secs(5));
    call(&client, &sandbox, "upload.offline_messages", "offline_messages", vec![valid_offline("d-1")]).await.unwrap();
    let report = |params: Value| {
        let params: Map<String, Value> = params.as_object().unwrap().clone();
        let client = client.clone();
        let url = sandbox.url().to_owned();
        async move {
            client.call(&url, &Secret::new(TOKEN), "get.offline_messages_report", params, None).await.map(|s| s.result)
        }
    };
    let mnemonic = |r: Result<Value, Failure>| match r {
        Err(Failure::Item { mnemonic, .. } | Failure::Request { mnemonic, .. }) => mnemonic,
        other => panic!("{other:?}"),
    };
    assert_eq!(mnemonic(report(json!({"date_till": "2026-01-02 00:00:00"})).await), "required_parameter_missed");
    let window = json!({"date_from": "2026-01-01 00:00:00", "date_till": "2026-01-02 00:00:00"});
    let with = |filter: Value| {
        let mut p = window.clone();
        p["filter"] = filter;
        p
    };
    let like = with(json!({"field": "ext_id", "operator": "like", "value": "d-%"}));
    assert_eq!(mnemonic(report(like).await), "invalid_parameter_value");
    let unjoined = with(json!({"filters": [
        {"field": "ext_id", "operator": "=", "value": "d-1"}, {"field": "ext_id", "operator": "=", "value": "d-2"}
    ]}));
    assert_eq!(mnemonic(report(unjoined).await), "invalid_parameter_value", "two ext_ids need condition or");
    let one = report(with(json!({"field": "ext_id", "operator": "=", "value": "d-1"}))).await.unwrap();
    assert_eq!(one["data"][0]["ext_id"], "d-1");
    let earlier = json!({"date_from": "2025-12-01 00:00:00", "date_till": "2025-12-31 23:59:59"});
    assert_eq!(report(earlier).await.unwrap()["data"], json!([]), "outside the dates");
}
