//! Copies of one event (Verbox re-sends a webhook, to one ingest replica or two) are delivered
//! once: the ledger catches a copy of what was delivered, and a claim taken before the call keeps
//! two copies in hand at the same moment from both being sent, by one deliver or by several
//! sharing the PostgreSQL ledger. The sandbox stores a repeated `ext_id` as a second item here,
//! so nothing relies on CoMagic refusing it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bridge_tests::fixtures::chat;
use bridge_tests::sandbox::Upload;
use bridge_tests::wait_for;
use serde_json::json;

use crate::helpers::{
    ext_ids, post_from_clients, shared_ledger, start_deliver_binary, terminate, Options, Pipeline, Tenant,
};

const SHOP: Tenant = Tenant { id: "shop", extra: "" };
const CHATS: u64 = 300;

/// Posts each of `CHATS` chats twice at the same moment, 16 pairs at a time; returns the event ids.
async fn post_each_twice_at_once(p: &Arc<Pipeline>) -> HashSet<String> {
    post_from_clients(p, 16, 0..CHATS, |p, i| async move {
        let body = chat(i, json!({}));
        let (first, second) = tokio::join!(p.post("shop", "chat", &body), p.post("shop", "chat", &body));
        assert_eq!(first, second, "a copy has the event id of the original");
        first
    })
    .await
}

/// Waits until every chat is stored and no copy waits anywhere, then checks each was stored once.
pub async fn assert_each_stored_once_when_settled(p: &Pipeline, posted: &HashSet<String>) {
    wait_for("every chat stored and every copy settled", Duration::from_secs(90), || async {
        let stored = p.sandbox.stored("shop", Upload::Chats).len() >= posted.len();
        (stored && p.broker.waiting().await == 0).then_some(())
    })
    .await;
    let stored = ext_ids(&p.sandbox.stored("shop", Upload::Chats));
    let unique: HashSet<String> = stored.iter().cloned().collect();
    println!("{} webhooks, {} stored, {} stored twice", posted.len(), stored.len(), stored.len() - unique.len());
    assert_eq!(stored.len(), unique.len(), "no chat stored twice");
    assert_eq!(&unique, posted);
}

pub async fn pipeline_storing_repeats(test: &str, options: Options) -> Arc<Pipeline> {
    let p = Pipeline::start(test, &[SHOP], options).await;
    p.sandbox.update_account("shop", |a| a.refuses_repeated_ext_id = false);
    Arc::new(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_webhook_posted_twice_at_once_is_stored_once() {
    let p = pipeline_storing_repeats("copies", Options::default()).await;
    let posted = post_each_twice_at_once(&p).await;
    assert_each_stored_once_when_settled(&p, &posted).await;
    // A copy taken from the queue may still be in hand (unacked messages are not in the depth).
    wait_for("each copy acked as a duplicate", Duration::from_secs(30), || async {
        let delivered = p.deliver_metric(r#"bridge_deliver_events_total{kind="chat",outcome="delivered"}"#).await;
        let copies = p.deliver_metric(r#"bridge_deliver_events_total{kind="chat",outcome="duplicate"}"#).await;
        assert_eq!(delivered, CHATS as f64, "each chat delivered once");
        (copies == CHATS as f64).then_some(())
    })
    .await;
    Arc::into_inner(p).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deliver_replicas_sharing_the_ledger_store_each_copy_once() {
    let ledger = shared_ledger();
    let options = Options { external_deliver: true, deliver_extra: ledger, ..Default::default() };
    let p = pipeline_storing_repeats("replicas", options).await;
    let mut replicas = [start_deliver_binary(&p, 1), start_deliver_binary(&p, 2)];
    let posted = post_each_twice_at_once(&p).await;
    assert_each_stored_once_when_settled(&p, &posted).await;
    // SIGTERM: each hands back what it holds; nothing may be left unsettled.
    replicas.iter_mut().for_each(terminate);
    assert_eq!(p.broker.depth(&p.broker.topology.deliver_queue()).await, 0, "no copy left unsettled");
    assert_eq!(p.sandbox.stored("shop", Upload::Chats).len(), posted.len(), "no copy sent while stopping");
    for run in [1, 2] {
        let log = std::fs::read_to_string(p.dir.path().join(format!("deliver-{run}.log"))).unwrap();
        assert!(log.contains(r#""message":"delivered""#), "replica {run} delivered some chats");
    }
    Arc::into_inner(p).unwrap().stop().await;
}
