//! The broker becomes unreachable under load: every webhook answered 200 reaches the queue.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bridge_shared::event::Envelope;
use bridge_tests::fixtures::chat;
use bridge_tests::proxy::{broker_address, TcpProxy};
use bridge_tests::wait_for;
use serde_json::json;

use crate::helpers::{spawn_app, Options};

const CLIENTS: usize = 16;
const PER_CLIENT: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_lost_mid_load_loses_no_accepted_event() {
    let proxy = TcpProxy::start(broker_address(&bridge_tests::broker::amqp_url())).await;
    let app = Arc::new(spawn_app("outage", Options { amqp_url: Some(proxy.amqp_url()), ..Default::default() }).await);
    app.wait_connected().await;

    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (app, answered) = (app.clone(), answered.clone());
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for i in 0..PER_CLIENT {
                    let (status, answer) =
                        app.post_json("acme", "chat", &chat((c * PER_CLIENT + i) as u64, json!({}))).await;
                    assert_eq!(status, 200, "every webhook is taken while the spool can: {answer}");
                    accepted.push(answer["event_id"].as_str().unwrap().to_owned());
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                accepted
            })
        })
        .collect();
    let total = CLIENTS * PER_CLIENT;
    wait_for("a third of the load", Duration::from_secs(60), || async {
        (answered.load(Ordering::SeqCst) >= total / 3).then_some(())
    })
    .await;
    proxy.cut();
    wait_for("two thirds of the load", Duration::from_secs(60), || async {
        (answered.load(Ordering::SeqCst) >= 2 * total / 3).then_some(())
    })
    .await;
    let spooled_during_outage = app.metric(r#"bridge_ingest_requests_total{kind="chat",outcome="spooled"}"#).await;
    proxy.restore();
    let mut accepted = HashSet::new();
    for client in clients {
        accepted.extend(client.await.unwrap());
    }
    assert_eq!(accepted.len(), total);
    assert!(spooled_during_outage > 0.0, "the outage was real: some events went to the spool");

    wait_for("the spool to drain", Duration::from_secs(60), || async {
        (app.metric("bridge_ingest_spool_events").await == 0.0 && app.metric("bridge_amqp_connected").await == 1.0)
            .then_some(())
    })
    .await;
    let queue = app.broker.topology.deliver_queue();
    wait_for("every accepted event in the queue", Duration::from_secs(30), || async {
        (app.broker.depth(&queue).await as usize >= total).then_some(())
    })
    .await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in app.broker.take_all(&queue).await {
        *seen.entry(Envelope::from_bytes(&m.body).unwrap().event_id.to_string()).or_default() += 1;
    }
    let missing: Vec<_> = accepted.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(missing.is_empty(), "{} accepted events are missing", missing.len());
    // A publish whose confirm was lost with the connection is spooled too; the broker may have kept
    // the first copy. Those duplicates carry the same event id (deliver's ledger skips them) and are
    // bounded by what was in flight when the connection dropped.
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    assert!(duplicates <= CLIENTS, "{duplicates} duplicates for at most {CLIENTS} publishes in flight");
    println!("outage: {total} accepted, {spooled_during_outage} spooled, {duplicates} duplicates");
    Arc::into_inner(app).expect("the clients are done").stop().await;
}
