//! "Send a test chat" through the running pipeline: accepted by ingest, delivered by deliver with
//! its rule and CoMagic id; a settings change used by the next one; a broken account shown as
//! paused with its fix, and resumed once repaired.

use std::time::Duration;

use bridge_tests::sandbox::Upload;
use bridge_tests::wait_for;
use reqwest::Method;
use serde_json::{json, Value};

use super::ConsoleClient;
use crate::helpers::{Options, Pipeline, Tenant};

async fn send_test_chat(console: &ConsoleClient, integration: &str) -> String {
    let (status, sent) = console.call(Method::POST, &format!("/api/integrations/{integration}/test-chat"), None).await;
    assert_eq!((status, &sent["accepted"]), (200, &json!(true)), "{sent}");
    sent["event_id"].as_str().unwrap().to_owned()
}

/// The test chat's steps once its latest is `outcome`.
async fn followed_to(console: &ConsoleClient, event_id: &str, outcome: &str) -> Value {
    wait_for(&format!("the test chat to be {outcome}"), Duration::from_secs(30), || async {
        let (_, followed) = console.call(Method::GET, &format!("/api/test-chats/{event_id}"), None).await;
        (followed["outcome"] == outcome).then_some(followed)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_chat_is_followed_to_its_comagic_id_and_a_paused_account_shows_its_fix() {
    let p = Pipeline::start("console-test-chat", &[Tenant { id: "shop", extra: "" }], Options::default()).await;
    let console = ConsoleClient::beside(&p).await;

    let event_id = send_test_chat(&console, "shop").await;
    let followed = followed_to(&console, &event_id, "delivered").await;
    let delivered = followed["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(delivered["rule"], "default", "{followed}");
    let stored = p.sandbox.stored("shop", Upload::Chats);
    assert_eq!(stored.len(), 1);
    assert_eq!(delivered["comagic_id"], stored[0]["id"], "the id CoMagic gave it");
    assert_eq!(stored[0]["campaign_id"], 5001);
    assert!(stored[0].values().any(|v| v.to_string().contains("verbox-bridge test chat")), "{:?}", stored[0]);

    // A new default campaign applies to the next test chat.
    let (_, shop) = console.call(Method::GET, "/api/integrations/shop", None).await;
    let mut form = shop["integration"].clone();
    form.as_object_mut().unwrap().retain(|k, _| !k.ends_with("token"));
    form["default"] = json!({"campaign_id": 5002});
    let (status, saved) = console
        .call(Method::PUT, "/api/integrations/shop", Some(json!({"version": shop["version"], "integration": form})))
        .await;
    assert_eq!(status, 200, "{saved}");
    // Once the console shows the save applied by ingest and deliver, one test chat tells (each
    // is a real chat: they are rationed).
    wait_for("the save to be applied by every process", Duration::from_secs(20), || async {
        let (_, view) = console.call(Method::GET, "/api/integrations/shop", None).await;
        (view["applied"]["applied"] == true && view["applied"]["version"] == saved["version"]).then_some(())
    })
    .await;
    let event_id = send_test_chat(&console, "shop").await;
    followed_to(&console, &event_id, "delivered").await;
    assert_eq!(p.sandbox.stored("shop", Upload::Chats).last().unwrap()["campaign_id"], 5002);

    // A broken account: the test chat is paused with the mnemonic and its fix; so is the state.
    p.sandbox.update_account("shop", |a| a.ip_whitelisted = false);
    let event_id = send_test_chat(&console, "shop").await;
    let followed = followed_to(&console, &event_id, "paused").await;
    let paused = followed["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(paused["mnemonic"], "ip_not_whitelisted", "{followed}");
    assert!(paused["fix"].as_str().unwrap().contains("IP address"), "{paused}");
    let state = wait_for("the state to say paused", Duration::from_secs(15), || async {
        let (_, state) = console.call(Method::GET, "/api/integrations/shop/state", None).await;
        (state["paused"] == true).then_some(state)
    })
    .await;
    assert_eq!(state["paused_reason"], "ip_not_whitelisted");
    assert!(state["fix"].as_str().unwrap().contains("API IP list"), "{state}");
    p.sandbox.update_account("shop", |a| a.ip_whitelisted = true);
    let followed = followed_to(&console, &event_id, "delivered").await;
    assert!(followed["steps"].as_array().unwrap().len() >= 2, "paused, then delivered: {followed}");
    // The table's count is sampled from deliver's metrics every 2 s.
    wait_for("the table to count the three delivered", Duration::from_secs(10), || async {
        let (_, listed) = console.call(Method::GET, "/api/integrations", None).await;
        (listed["integrations"][0]["state"]["delivered"].as_f64() >= Some(3.0)).then_some(())
    })
    .await;
    console.stop().await;
    p.stop().await;
}
