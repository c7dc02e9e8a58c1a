//! Fail alone: one tenant's odd webhooks, odd CoMagic answers and outage leave every other tenant's
//! chats flowing, and deliver healthy.

use std::collections::HashSet;
use std::time::Duration;

use bridge_tests::fixtures::chat;
use bridge_tests::sandbox::{Fault, FaultKind, Upload};
use serde_json::json;

use crate::helpers::{ext_ids, Options, Pipeline, Tenant};

const ODD: Tenant = Tenant { id: "odd", extra: "" };
const OTHER: Tenant = Tenant { id: "other", extra: "" };

/// A chat whose messages carry the last second chrono can represent, as unix seconds: converting
/// it to the account's zone overflows.
fn chat_at_the_end_of_time(dialog_id: u64) -> serde_json::Value {
    let mut body = chat(dialog_id, json!({}));
    for m in body["data"]["dialog"]["messages"].as_array_mut().unwrap() {
        m["dateTimeUTC"] = json!(8_210_266_876_799_i64);
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_odd_events_answers_and_outage_leave_another_tenants_chats_flowing() {
    let p = Pipeline::start("fail-alone", &[ODD, OTHER], Options::default()).await;
    // An answer whose metadata.limits makes no sense: huge, negative, not numbers.
    let absurd = json!({"jsonrpc": "2.0", "id": 1, "result": {"data": [], "metadata": {"limits": {
        "day_limit": -1, "day_remaining": 1e300, "day_reset": u64::MAX,
        "minute_limit": "many", "minute_remaining": 0, "minute_reset": -7}}}});
    p.sandbox.add_fault(Fault {
        account: Some("odd".into()),
        kind: FaultKind::Body,
        calls: Some(2),
        body: Some(absurd),
        ..Default::default()
    });
    p.post("odd", "chat", &chat_at_the_end_of_time(1)).await;
    p.post("odd", "chat", &chat(2, json!({}))).await;
    // Not an envelope at all, straight onto the events exchange.
    let events = p.broker.topology.events_exchange();
    p.broker.publisher().await.publish(&events, "chat", b"\xff not json", Default::default()).await.unwrap();
    // Then the tenant's account refuses the bridge, and a request-wide error for what gets through.
    p.sandbox.update_account("odd", |a| a.ip_whitelisted = false);
    for i in 3..20 {
        p.post("odd", "chat", &chat_at_the_end_of_time(i)).await;
    }

    let mut sent = HashSet::new();
    for i in 1000..1100 {
        sent.insert(p.post("other", "chat", &chat(i, json!({}))).await);
    }
    let stored = p.wait_stored("other", Upload::Chats, 100, Duration::from_secs(30)).await;
    assert_eq!(ext_ids(&stored).into_iter().collect::<HashSet<_>>(), sent);
    assert_eq!(stored.len(), 100, "each once");

    let health = p.http.get(format!("{}/healthz", p.deliver_address())).send().await.unwrap();
    assert_eq!(health.status(), 200, "deliver is healthy");
    for stage in ["intake", "lane"] {
        let panics = p.deliver_metric(&format!(r#"bridge_deliver_panics_total{{stage="{stage}"}}"#)).await;
        assert_eq!(panics, 0.0, "no panic while handling messages ({stage})");
    }
    p.stop().await;
}

/// Chats over 16 KiB travel the large-event queue, with its own shallow window, and arrive like
/// the others; its retries come back to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_chats_travel_their_own_queue_and_arrive() {
    let p = Pipeline::start("large-events", &[OTHER], Options::default()).await;
    p.sandbox.add_fault(Fault { kind: FaultKind::Http500, ..Default::default() });
    let mut sent = HashSet::new();
    for i in 0..20 {
        let mut body = chat(i, json!({}));
        if i % 2 == 0 {
            body["data"]["dialog"]["messages"][0]["text"] = json!("long ".repeat(8_000));
        }
        sent.insert(p.post("other", "chat", &body).await);
    }
    bridge_tests::wait_for("every chat to reach a retry queue", Duration::from_secs(30), || async {
        let retried = p.deliver_metric(r#"bridge_deliver_events_total{kind="chat",outcome="retried"}"#).await;
        (retried >= 20.0).then_some(())
    })
    .await;
    p.sandbox.clear_faults();
    let stored = p.wait_stored("other", Upload::Chats, 20, Duration::from_secs(60)).await;
    assert_eq!(ext_ids(&stored).into_iter().collect::<HashSet<_>>(), sent);
    let large = p.broker.topology.large_deliver_queue();
    assert_eq!(p.broker.depth(&large).await, 0, "the large queue exists and is drained");
    p.stop().await;
}
