//! The broker address list: both services connect to the first node that answers and move to the
//! next when theirs drops. Three "nodes" here are three proxies in front of the test broker, each
//! cut on its own.

use std::collections::HashSet;
use std::time::Duration;

use bridge_shared::amqp::node_address;
use bridge_tests::fixtures::chat;
use bridge_tests::proxy::{broker_address, TcpProxy};
use bridge_tests::sandbox::Upload;
use bridge_tests::wait_for;
use serde_json::json;

use crate::helpers::{deliver_command_with, ext_ids, Options, Pipeline, Service, Tenant};
use crate::journeys::assert_journeys_end_once;

const SHOP: Tenant = Tenant { id: "shop", extra: "" };

/// Waits until ingest and deliver both say (in `bridge_amqp_node`) that they are on `node`.
async fn wait_both_on(p: &Pipeline, node: &TcpProxy, what: &str) {
    let sample = format!(r#"bridge_amqp_node{{node="{}"}}"#, node_address(&node.amqp_url()));
    wait_for(what, Duration::from_secs(40), || async {
        let on = p.ingest_metric(&sample).await == 1.0 && p.deliver_metric(&sample).await == 1.0;
        (on && p.ready_status(Service::Deliver).await == 200).then_some(())
    })
    .await;
}

async fn post_chats(p: &Pipeline, ids: std::ops::Range<u64>) -> HashSet<String> {
    let mut posted = HashSet::new();
    for id in ids {
        posted.insert(p.post("shop", "chat", &chat(id, json!({}))).await);
    }
    posted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_node_down_a_node_dropped_and_all_down_then_one_back() {
    let broker = broker_address(&bridge_tests::broker::amqp_url());
    let nodes = [TcpProxy::start(broker).await, TcpProxy::start(broker).await, TcpProxy::start(broker).await];
    let [a, b, c] = &nodes;
    a.cut();
    let options = Options { amqp_urls: Some(nodes.iter().map(TcpProxy::amqp_url).collect()), ..Default::default() };
    let p = Pipeline::start("nodes", &[SHOP], options).await;

    // The first node is down at start: both services are on the second, and so is a command.
    wait_both_on(&p, b, "both services on the second node").await;
    let urls = nodes.iter().map(TcpProxy::amqp_url).collect::<Vec<_>>().join(",");
    let stats = deliver_command_with(&p.config, &["dlq", "stats"], &[("BRIDGE__AMQP__URLS", urls)]).await;
    assert_eq!(stats.code, 0, "{}{}", stats.stdout, stats.stderr);
    let mut posted = post_chats(&p, 1..11).await;
    p.wait_stored("shop", Upload::Chats, 10, Duration::from_secs(30)).await;

    // Their node drops while they are connected: both move on to the third.
    b.cut();
    wait_both_on(&p, c, "both services on the third node").await;
    posted.extend(post_chats(&p, 11..21).await);
    p.wait_stored("shop", Upload::Chats, 20, Duration::from_secs(30)).await;

    // Every node is down: ingest spools, deliver is not ready; one node comes back and both
    // resume on it by themselves.
    c.cut();
    wait_for("both services to see the cluster gone", Duration::from_secs(30), || async {
        let down =
            p.ingest_metric("bridge_amqp_connected").await == 0.0 && p.ready_status(Service::Deliver).await == 503;
        down.then_some(())
    })
    .await;
    assert_eq!(p.ready_status(Service::Ingest).await, 200, "ingest takes events into its spool");
    posted.extend(post_chats(&p, 21..31).await);
    assert_eq!(p.ingest_metric(r#"bridge_ingest_requests_total{kind="chat",outcome="spooled"}"#).await, 10.0);
    a.restore();
    wait_both_on(&p, a, "both services back, on the first node").await;
    let stored = p.wait_stored("shop", Upload::Chats, 30, Duration::from_secs(60)).await;
    let stored_ids = ext_ids(&stored);
    assert_eq!(stored_ids.len(), 30, "each chat stored once");
    assert_eq!(stored_ids.into_iter().collect::<HashSet<_>>(), posted);
    assert_journeys_end_once(&p.config, posted).await;
    p.stop().await;
}
