//! Each attribution rule and mapping rule, seen arriving at the sandbox, for a campaign-mode and a
//! source-mode integration; and batching.

use std::time::Duration;

use bridge_tests::fixtures::{chat, offline};
use bridge_tests::sandbox::config::Session;
use bridge_tests::sandbox::Upload;
use bridge_tests::wait_for;
use serde_json::{json, Value};

use crate::helpers::{ext_ids, Options, Pipeline, Tenant};

const CAMPAIGN_MODE: Tenant =
    Tenant { id: "shop", extra: "[integration.messengers]\ntelegram = { campaign_id = 5002 }" };
const SOURCE_MODE: Tenant = Tenant {
    id: "blog",
    extra: "default = { site_id = 78, source_id = 12 }\n[integration.messengers]\nwhatsapp = { site_id = 77, source_id = 13 }",
};

fn by_ext_id<'a>(items: &'a [serde_json::Map<String, Value>], ext_id: &str) -> &'a serde_json::Map<String, Value> {
    items.iter().find(|i| i["ext_id"] == ext_id).unwrap_or_else(|| panic!("{ext_id} was delivered"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_arrives_for_both_modes() {
    // The source-mode integration replaces the fixture's campaign default.
    let blog = Tenant { id: "blog", extra: SOURCE_MODE.extra };
    let p = Pipeline::start("rules", &[CAMPAIGN_MODE, blog], Options::default()).await;
    for account in ["shop", "blog"] {
        p.sandbox.update_account(account, |a| {
            a.sessions = vec![Session { id: 900_001, started_at: "2026-01-10 11:00:00".into() }];
        });
    }
    let session = json!({"customData": {"comagic_session_id": "900001"}});
    let unknown_session = json!({"customData": {"comagic_session_id": "424242"}});

    let shop_session = p.post("shop", "chat", &chat(1, session.clone())).await;
    let shop_telegram = p.post("shop", "chat", &chat(2, json!({"source": {"type": {"id": "telegram"}}}))).await;
    let shop_default = p.post("shop", "chat", &chat(3, json!({}))).await;
    let shop_fallback = p.post("shop", "chat", &chat(4, unknown_session.clone())).await;
    let shop_offline = p.post("shop", "offline", &offline("c-off-1", "Do you deliver?")).await;
    let blog_whatsapp = p.post("blog", "chat", &chat(5, json!({"source": {"type": {"id": "whatsapp"}}}))).await;
    let blog_default = p.post("blog", "chat", &chat(6, json!({}))).await;
    let blog_session = p.post("blog", "chat", &chat(7, session)).await;

    let shop = p.wait_stored("shop", Upload::Chats, 4, Duration::from_secs(30)).await;
    let blog = p.wait_stored("blog", Upload::Chats, 3, Duration::from_secs(30)).await;
    let offline_items = p.wait_stored("shop", Upload::OfflineMessages, 1, Duration::from_secs(30)).await;

    assert_eq!(by_ext_id(&shop, &shop_session)["visitor_session_id"], 900_001);
    assert!(by_ext_id(&shop, &shop_session).get("campaign_id").is_none(), "a session and nothing else");
    assert_eq!(by_ext_id(&shop, &shop_telegram)["campaign_id"], 5002);
    assert_eq!(by_ext_id(&shop, &shop_default)["campaign_id"], 5001);
    let fallback = by_ext_id(&shop, &shop_fallback);
    assert_eq!(fallback["campaign_id"], 5001, "a refused session falls back to the default");
    assert!(fallback.get("visitor_session_id").is_none());
    assert_eq!(by_ext_id(&blog, &blog_whatsapp)["site_id"], 77);
    assert_eq!(by_ext_id(&blog, &blog_whatsapp)["source_id"], 13);
    assert_eq!(by_ext_id(&blog, &blog_default)["source_id"], 12);
    assert_eq!(by_ext_id(&blog, &blog_session)["visitor_session_id"], 900_001);

    // Mapping, as the sandbox stored it.
    let item = by_ext_id(&shop, &shop_default);
    assert_eq!(item["phone"], "79123456789");
    assert_eq!(item["status"], "succeed", "an operator answered");
    assert_eq!(item["start_date_time"], "2026-01-10 12:00:00", "UTC converted to Moscow time");
    let messages = item["messages"].as_array().unwrap();
    assert_eq!(messages[0]["source"], "visitor");
    assert_eq!(messages[1]["source"], "operator");
    assert_eq!(messages[1]["employee_id"], 101);
    let offline_item = by_ext_id(&offline_items, &shop_offline);
    assert_eq!(offline_item["email"], "anna@example.ru");
    assert_eq!(offline_item["message"], "Do you deliver?");
    assert_eq!(offline_item["form_name"], "Verbox");

    for (kind, rule, n) in [
        ("chat", "session", 2.0),
        ("chat", "messenger", 2.0),
        ("chat", "default", 2.0),
        ("chat", "session_fallback", 1.0),
        ("offline", "default", 1.0),
    ] {
        // The sandbox stores an item before deliver hears back and counts it: wait for the count.
        let sample = format!(r#"bridge_deliver_attribution_total{{kind="{kind}",rule="{rule}"}}"#);
        let seen = wait_for(&format!("{sample} to reach {n}"), Duration::from_secs(10), || async {
            let v = p.deliver_metric(&sample).await;
            (v >= n).then_some(v)
        })
        .await;
        assert_eq!(seen, n, "{kind} {rule}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_chats_take_at_most_25_calls() {
    let p = Pipeline::start("batching", &[CAMPAIGN_MODE], Options { linger_ms: 1000, ..Default::default() }).await;
    let mut sent = Vec::new();
    for i in 0..500 {
        sent.push(p.post("shop", "chat", &chat(10_000 + i, json!({}))).await);
    }
    let stored = p.wait_stored("shop", Upload::Chats, 500, Duration::from_secs(60)).await;
    let mut delivered = ext_ids(&stored);
    delivered.sort();
    sent.sort();
    assert_eq!(delivered, sent, "each chat once");
    let calls: Vec<_> = p.sandbox.calls().into_iter().filter(|c| c.method == "upload.chats").collect();
    assert!(calls.len() <= 25, "{} calls", calls.len());
    assert!(calls.iter().all(|c| c.items <= 50));
    p.stop().await;
}
