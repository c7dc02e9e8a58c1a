//! Every event's journey through the running pipeline: a chat found by its dialog id and by the
//! visitor's phone (however typed) shows its rule, the id CoMagic gave it and the call it went
//! in; from the API and from `deliver events`; a tenant finds only its own events.

use std::time::Duration;

use bridge_tests::fixtures::chat;
use bridge_tests::sandbox::Upload;
use bridge_tests::wait_for;
use reqwest::Method;
use serde_json::{json, Value};

use super::ConsoleClient;
use crate::helpers::{deliver_command, Options, Pipeline, Tenant};

async fn issue_tenant(console: &ConsoleClient, id: &str) -> String {
    let expires_at = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let request = json!({"role": "tenant", "integration": id, "expires_at": expires_at});
    let (status, body) = console.call(Method::POST, "/api/tokens", Some(request)).await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_is_found_by_its_dialog_and_phone_with_its_rule_and_comagic_id_and_only_by_its_tenant() {
    let tenants = [Tenant { id: "shop", extra: "" }, Tenant { id: "other", extra: "" }];
    let p = Pipeline::start("console-journey", &tenants, Options::default()).await;
    let console = ConsoleClient::beside(&p).await;
    let event_id = p.post("shop", "chat", &chat(4242, json!({}))).await;
    let stored = p.wait_stored("shop", Upload::Chats, 1, Duration::from_secs(30)).await;

    let found = wait_for("the chat's journey to end delivered", Duration::from_secs(20), || async {
        let (status, page) = console.call(Method::GET, "/api/integrations/shop/events?dialog=4242", None).await;
        assert_eq!(status, 200, "{page}");
        (page["events"][0]["end"] == "delivered").then_some(page)
    })
    .await;
    let events = found["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{found}");
    let journey = &events[0];
    assert_eq!((&journey["event_id"], &journey["dialog_id"]), (&json!(event_id), &json!("4242")));
    assert!(journey["accepted_by"].is_string(), "{journey}");
    let item = &journey["item"];
    assert_eq!((&item["campaign_id"], &item["messages"]), (&json!(5001), &json!(2)), "{journey}");
    assert!(journey["contact"].as_str().is_some_and(|c| c.contains('*')), "the phone is masked: {journey}");
    assert!(!journey.to_string().contains("345-67") && !journey.to_string().contains("9123456789"), "{journey}");
    assert!(journey.get("lookups").is_none(), "lookup keys are not shown: {journey}");
    let delivered = journey["steps"].as_array().unwrap().last().unwrap();
    assert_eq!(delivered["outcome"], "delivered", "{journey}");
    assert_eq!(delivered["rule"], "default");
    assert_eq!(delivered["comagic_id"], stored[0]["id"], "the id CoMagic gave it");
    assert_eq!(delivered["items"], 1);
    assert!(delivered["replica"].is_string());

    for typed in ["79123456789", "+7 (912) 345-67-89"] {
        let path = format!("/api/integrations/shop/events?contact={}", encoded(typed));
        let (status, page) = console.call(Method::GET, &path, None).await;
        assert_eq!((status, &page["events"][0]["event_id"]), (200, &json!(event_id)), "{typed}: {page}");
    }
    let (status, page) = console.call(Method::GET, "/api/integrations/shop/events?contact=70000000000", None).await;
    assert_eq!((status, page["events"].as_array().map(Vec::len)), (200, Some(0)), "{page}");
    let (status, one) = console.call(Method::GET, &format!("/api/events/{event_id}"), None).await;
    assert_eq!((status, &one["end"]), (200, &json!("delivered")), "{one}");
    let (status, refused) = console.call(Method::GET, "/api/integrations/shop/events?limit=1000", None).await;
    assert_eq!((status, &refused["error"]), (422, &json!("invalid")), "{refused}");

    // Another tenant finds nothing of shop's, not even that it exists.
    let other = issue_tenant(&console, "other").await;
    let (status, _) = console.call_as(&other, Method::GET, &format!("/api/events/{event_id}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = console.call_as(&other, Method::GET, "/api/integrations/shop/events?dialog=4242", None).await;
    assert_eq!(status, 404);
    let (status, page) = console.call_as(&other, Method::GET, "/api/integrations/other/events?dialog=4242", None).await;
    assert_eq!((status, page["events"].as_array().map(Vec::len)), (200, Some(0)), "{page}");
    let shop = issue_tenant(&console, "shop").await;
    let (status, mine) = console.call_as(&shop, Method::GET, &format!("/api/events/{event_id}"), None).await;
    assert_eq!((status, &mine["event_id"]), (200, &json!(event_id)));

    // The CLI asks the running deliver over its socket.
    let run =
        deliver_command(&p.config, &["events", "find", "--integration", "shop", "--contact", "79123456789"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(&event_id) && run.stdout.contains("delivered"), "{}", run.stdout);
    let run = deliver_command(&p.config, &["events", "show", &event_id, "--json"]).await;
    let shown: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    assert_eq!(shown["steps"].as_array().unwrap().last().unwrap()["comagic_id"], stored[0]["id"], "{}", run.stdout);

    // A chat CoMagic rejects is dead-lettered with its class; sent again once fixed, it is
    // replayed and delivered, once.
    let (status, refused) = console.call(Method::POST, &format!("/api/events/{event_id}/send-again"), None).await;
    assert_eq!((status, &refused["error"]), (409, &json!("conflict")), "a delivered event is not sent again");
    p.sandbox.update_account("shop", |a| a.campaigns.iter_mut().for_each(|c| c.status = "inactive".into()));
    let rejected = p.post("shop", "chat", &chat(4343, json!({}))).await;
    let dead = wait_for("the rejected chat's journey to end dead-lettered", Duration::from_secs(30), || async {
        let (_, j) = console.call(Method::GET, &format!("/api/events/{rejected}"), None).await;
        (j["end"] == "dead_lettered").then_some(j)
    })
    .await;
    let last = dead["steps"].as_array().unwrap().last().unwrap();
    assert_eq!(
        (&last["class"], &last["mnemonic"]),
        (&json!("comagic_rejected"), &json!("campaign_is_inactive")),
        "{dead}"
    );
    let path = format!("/api/events/{rejected}/send-again");
    let (status, _) = console.call_as(&other, Method::POST, &path, None).await;
    assert_eq!(status, 404, "another tenant cannot send it again");
    p.sandbox.update_account("shop", |a| a.campaigns.iter_mut().for_each(|c| c.status = "active".into()));
    let (status, sent) = console.call_as(&shop, Method::POST, &path, None).await;
    assert_eq!(status, 200, "{sent}");
    let delivered = wait_for("the sent-again chat's journey to end delivered", Duration::from_secs(30), || async {
        let (_, j) = console.call(Method::GET, &format!("/api/events/{rejected}"), None).await;
        (j["end"] == "delivered").then_some(j)
    })
    .await;
    let outcomes: Vec<&str> =
        delivered["steps"].as_array().unwrap().iter().map(|s| s["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["dead_lettered", "replayed", "delivered"], "{delivered}");
    let (status, _) = console.call(Method::POST, &path, None).await;
    assert_eq!(status, 409, "sent again once");
    assert_eq!(p.sandbox.stored("shop", Upload::Chats).len(), 2);
    let (_, dead_page) = console.call(Method::GET, "/api/integrations/shop/events?outcome=delivered", None).await;
    assert_eq!(dead_page["events"].as_array().map(Vec::len), Some(2), "{dead_page}");

    // A chat CoMagic cannot take (no contact) is skipped, its webhook kept: sent again, it is
    // replayed and skipped again (it still has none).
    let skipped = p.post("shop", "chat", &chat(4444, json!({"phone": null}))).await;
    let journey = wait_for("the contact-less chat's journey to say skipped", Duration::from_secs(20), || async {
        let (_, j) = console.call(Method::GET, &format!("/api/events/{skipped}"), None).await;
        (j["last"] == "skipped").then_some(j)
    })
    .await;
    assert_eq!((&journey["can_send_again"], &journey["steps"][0]["error"]), (&json!(true), &json!("no_contact")));
    assert!(journey.get("webhook").is_none(), "the kept webhook is not shown: {journey}");
    let (status, sent) = console.call(Method::POST, &format!("/api/events/{skipped}/send-again"), None).await;
    assert_eq!(status, 200, "{sent}");
    wait_for("the sent-again chat to be skipped again", Duration::from_secs(20), || async {
        let (_, j) = console.call(Method::GET, &format!("/api/events/{skipped}"), None).await;
        let outcomes: Vec<String> =
            j["steps"].as_array()?.iter().map(|s| s["outcome"].as_str().unwrap_or("").to_owned()).collect();
        (outcomes == ["skipped", "replayed", "skipped"]).then_some(())
    })
    .await;
    console.stop().await;
    p.stop().await;
}
