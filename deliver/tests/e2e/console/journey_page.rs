//! The journey in the console page (headless Chromium, as `browser.rs`): a chat found by its
//! dialog id and by the visitor's phone, its journey with its rule and the id CoMagic gave it; a
//! dead-lettered chat's journey with its class, sent again from the page and delivered once.

use std::time::Duration;

use bridge_tests::fixtures::chat;
use bridge_tests::sandbox::Upload;
use bridge_tests::wait_for;
use serde_json::json;

use super::browser::Browser;
use super::ConsoleClient;
use crate::helpers::{ext_ids, Options, Pipeline, Tenant};

/// Searches the page's events (the form as it is filled) until the results list `wanted`: a
/// journey is written a moment after its step, so a search may come before it.
async fn search_until(b: &Browser, wanted: &str) -> String {
    wait_for(&format!("the events search to list {wanted}"), Duration::from_secs(30), || async {
        b.click("#events-search").await;
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let listed = b.text("#events-list tbody").await;
            if listed.contains(wanted) {
                return Some(listed);
            }
        }
        None
    })
    .await
}

async fn search(b: &Browser, dialog: &str, contact: &str, outcome: &str, wanted: &str) -> String {
    b.fill("#events-dialog", dialog).await;
    b.fill("#events-contact", contact).await;
    b.select("#events-outcome", outcome).await;
    search_until(b, wanted).await
}

/// Opens the journey of `event_id` from its row of the results.
async fn open(b: &Browser, event_id: &str) {
    b.click(&format!("#events-list tr[data-event='{event_id}'] button")).await;
    b.text_with("#event-journey-title", event_id, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_is_found_in_the_page_and_a_dead_lettered_one_is_sent_again_from_its_journey() {
    let tenants = [Tenant { id: "shop", extra: "" }];
    let p = Pipeline::start("console-journey-page", &tenants, Options::default()).await;
    let console = ConsoleClient::beside(&p).await;
    let delivered = p.post("shop", "chat", &chat(4242, json!({}))).await;
    let stored = p.wait_stored("shop", Upload::Chats, 1, Duration::from_secs(30)).await;
    let comagic_id = stored[0]["id"].to_string();

    let b = Browser::start().await;
    b.sign_in_as_admin(&console.url).await;
    b.click("#integrations a[href='#shop']").await;
    b.text_with("#detail-title", "Integration shop", Duration::from_secs(10)).await;

    // Found by its dialog id, and by the visitor's phone.
    let listed = search(&b, "4242", "", "", &delivered).await;
    assert!(listed.contains("4242") && listed.contains("delivered") && listed.contains(&comagic_id), "{listed}");
    let listed = search(&b, "", "79123456789", "delivered", &delivered).await;
    assert!(!listed.contains("9123456789") && !listed.contains("345-67"), "the contact is masked: {listed}");
    b.shot_at("10-events", "#events-section").await;

    open(&b, &delivered).await;
    let steps = b.text_with("#event-steps", "delivered", Duration::from_secs(10)).await;
    assert!(steps.contains("default") && steps.contains(&comagic_id), "{steps}");
    let end = b.text_with("#event-facts [data-fact=end]", "delivered", Duration::from_secs(1)).await;
    assert_eq!(end, "delivered");
    let facts = b.text("#event-facts").await;
    assert!(facts.contains("4242") && !facts.contains("9123456789"), "{facts}");
    let item = b.text("#event-item").await;
    assert!(item.contains('{') && !item.contains("9123456789"), "the item, masked: {item}");
    assert!(!b.shown("#event-send-again").await, "a delivered event is not sent again");
    b.shot_at("11-journey", "#event-journey").await;

    // Every campaign of the account inactive: the next chat is dead-lettered.
    p.sandbox.update_account("shop", |a| a.campaigns.iter_mut().for_each(|c| c.status = "inactive".into()));
    let dead = p.post("shop", "chat", &chat(4343, json!({}))).await;
    search(&b, "4343", "", "dead_lettered", &dead).await;
    open(&b, &dead).await;
    let steps = b.text_with("#event-steps", "comagic_rejected", Duration::from_secs(10)).await;
    assert!(steps.contains("dead_lettered"), "{steps}");
    b.text_with("#event-facts [data-fact=end]", "dead_lettered", Duration::from_secs(1)).await;
    assert!(b.shown("#event-send-again").await, "a dead-lettered event may be sent again");
    b.shot_at("12-dead-lettered-journey", "#event-journey").await;

    // Reactivated, sent again from the page (asked first): replayed, then delivered, once.
    p.sandbox.update_account("shop", |a| a.campaigns.iter_mut().for_each(|c| c.status = "active".into()));
    b.click("#event-send-again").await;
    let asked = b.client.get_alert_text().await.unwrap();
    assert!(asked.contains(&dead) && asked.contains("again"), "the page asks first, naming the event: {asked}");
    b.client.accept_alert().await.unwrap();
    b.text_with("#event-send-result", "replayed 1", Duration::from_secs(15)).await;
    b.text_with("#event-steps", "replayed", Duration::from_secs(30)).await;
    b.text_with("#event-facts [data-fact=end]", "delivered", Duration::from_secs(30)).await;
    let steps = b.text("#event-steps").await;
    assert!(steps.contains("comagic_rejected") && steps.contains("replayed"), "{steps}");
    let stored = p.wait_stored("shop", Upload::Chats, 2, Duration::from_secs(10)).await;
    let ids = ext_ids(&stored);
    assert_eq!(ids.iter().filter(|id| **id == dead).count(), 1, "the sandbox holds it once: {ids:?}");
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(!b.shown("#event-send-again").await, "delivered, it is not offered again");
    b.shot_at("13-sent-again", "#event-journey").await;

    b.close().await;
    console.stop().await;
    p.stop().await;
}
