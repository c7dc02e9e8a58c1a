//! A panic costs one event a bounded number of tries, never its tenant: a chat whose report check
//! panics (set off by bridge_shared::fault_injection) is dead-lettered as `poison` with the panic's
//! message, and every other chat of its integration, sent with it or after it, is delivered once.

use std::collections::HashSet;
use std::time::Duration;

use bridge_shared::amqp::headers::{self, DeadClass};
use bridge_shared::fault_injection::PANIC_IN_REPORT;
use bridge_tests::fixtures::chat;
use bridge_tests::sandbox::{Fault, FaultKind, Upload};
use bridge_tests::wait_for;
use serde_json::json;

use crate::helpers::{ext_ids, Options, Pipeline, Tenant};

const SHOP: Tenant = Tenant { id: "shop", extra: "" };
const OTHER: Tenant = Tenant { id: "other", extra: "" };

async fn post_chats(p: &Pipeline, integration: &str, dialogs: std::ops::Range<u64>) -> HashSet<String> {
    let mut ids = HashSet::new();
    for i in dialogs {
        ids.insert(p.post(integration, "chat", &chat(i, json!({}))).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_that_panics_in_the_report_path_is_poison_and_its_tenant_keeps_flowing() {
    let p = Pipeline::start("panic-report", &[SHOP, OTHER], Options { linger_ms: 500, ..Default::default() }).await;
    // The first upload answers 500: its batch is in doubt, and the report check panics on the
    // marked chat.
    p.sandbox.add_fault(Fault {
        account: Some("shop".into()),
        kind: FaultKind::Http500,
        calls: Some(1),
        ..Default::default()
    });
    let marked = p.post("shop", "chat", &chat(1, json!({"name": PANIC_IN_REPORT}))).await;
    let mut good = post_chats(&p, "shop", 2..22).await;
    wait_for("the report check to panic", Duration::from_secs(60), || async {
        (p.deliver_metric(r#"bridge_deliver_panics_total{stage="lane"}"#).await >= 1.0).then_some(())
    })
    .await;
    good.extend(post_chats(&p, "shop", 100..140).await);
    let other = post_chats(&p, "other", 200..240).await;
    let stored = p.wait_stored("shop", Upload::Chats, good.len(), Duration::from_secs(60)).await;
    assert_eq!(ext_ids(&stored).into_iter().collect::<HashSet<_>>(), good, "every other chat of the tenant, once");
    let others = p.wait_stored("other", Upload::Chats, other.len(), Duration::from_secs(30)).await;
    assert_eq!(others.len(), other.len());
    let dead = p.the_one_dead_letter("the marked chat in the dead-letter queue", Duration::from_secs(60)).await;
    let h = &dead.headers;
    assert_eq!(headers::get_str(h, headers::ERROR_CLASS).as_deref(), Some(DeadClass::Poison.as_str()));
    let error = headers::get_str(h, headers::ERROR).unwrap_or_default();
    assert!(error.contains("panicked 3 times") && error.contains(PANIC_IN_REPORT), "{error}");
    let envelope = bridge_shared::event::Envelope::from_bytes(&dead.body).unwrap();
    assert_eq!(envelope.event_id.as_str(), marked);
    let panics = p.deliver_metric(r#"bridge_deliver_panics_total{stage="lane"}"#).await;
    assert!((3.0..=10.0).contains(&panics), "a bounded number of panics: {panics}");
    assert_eq!(p.sandbox.stored("shop", Upload::Chats).len(), good.len(), "nothing stored twice");
    p.stop().await;
}
