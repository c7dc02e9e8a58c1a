//! The dashboard and the alert rules against live data: the pipeline under steady traffic, scraped
//! by a real Prometheus with `deploy/prometheus/alerts.yml` loaded. Every panel that should show
//! something under traffic returns a series; breaking things makes the matching alert go pending.
//! A panel whose query is renamed, or a metric that disappears, fails it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bridge_tests::config::webhook_url;
use bridge_tests::dashboard::panels;
use bridge_tests::fixtures::{chat, offline};
use bridge_tests::prometheus::{LocalPrometheus, Target};
use bridge_tests::proxy::{broker_address, TcpProxy};
use bridge_tests::wait_for;
use serde_json::json;

use crate::helpers::{integrations_toml, shared_ledger, Options, Pipeline, Tenant};

const SHOP: Tenant = Tenant { id: "shop", extra: "" };
const OTHER: Tenant = Tenant { id: "other", extra: "" };

/// Panels that show trouble only: empty while all is well.
const TROUBLE_ONLY: &[&str] = &["Paused integrations", "Integrations not applied"];

/// RabbitMQ's prometheus plugin on the test broker (`scripts/test.sh` enables it).
const RABBITMQ_METRICS: &str = "127.0.0.1:15692";

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").split('/').next().unwrap().to_owned()
}

/// A panel's query as Grafana would send it, on this test's queues (the dashboard filters on the
/// `bridge.` prefix; the test's topology has a prefix of its own).
fn as_sent(expr: &str, prefix: &str) -> String {
    let escaped = prefix.replace('.', "\\\\.");
    expr.replace("$__rate_interval", "30s").replace("$__range", "5m").replace("bridge\\\\.", &format!("{escaped}\\\\."))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs a Prometheus and breaks the pipeline on purpose: scripts/test.sh runs it alone"]
async fn every_panel_shows_live_data_and_breaking_things_raises_the_matching_alert() {
    let proxy = TcpProxy::start(broker_address(&bridge_tests::broker::amqp_url())).await;
    // The shared ledger, as replicas run it: its database's panel has data too.
    let ledger = shared_ledger();
    let options = Options { deliver_extra: ledger, ..Options::both_through(proxy.amqp_url()) };
    let p = Arc::new(Pipeline::start("live", &[SHOP, OTHER], options).await);
    let dir = p.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yml");
    let targets = [
        Target { job: "ingest", address: host_port(p.ingest_metrics_address()), path: "/metrics" },
        Target { job: "deliver", address: host_port(p.deliver_address()), path: "/metrics" },
        Target { job: "comagic-sandbox", address: host_port(p.sandbox.url()), path: "/metrics" },
        Target { job: "rabbitmq", address: RABBITMQ_METRICS.into(), path: "/metrics/per-object" },
    ];
    let prometheus = LocalPrometheus::start(&targets, &rules, &dir).await;
    assert!(prometheus.rule_names().await.iter().any(|r| r == "BridgeBrokerDown"), "alerts.yml is loaded");

    // Steady traffic: chats of both tenants and an offline request now and then, 20 a second.
    let running = Arc::new(AtomicBool::new(true));
    let traffic = {
        let (p, running) = (p.clone(), running.clone());
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(50));
            let mut i = 0u64;
            while running.load(Ordering::SeqCst) {
                pace.tick().await;
                let tenant = if i.is_multiple_of(2) { "shop" } else { "other" };
                let (kind, body) = if i % 10 == 9 {
                    ("offline", offline(&format!("live-{i}"), &format!("Call me back ({i})")))
                } else {
                    ("chat", chat(i, json!({})))
                };
                let url = webhook_url(p.ingest_address(), tenant, kind, bridge_tests::fixtures::WEBHOOK_TOKEN);
                let _ = p.http.post(url).body(body.to_string()).send().await;
                i += 1;
            }
        })
    };

    // Every panel that should have data under traffic returns a series.
    let prefix = p.broker.prefix.clone();
    let show_data = |trouble: bool| {
        let (prometheus, prefix) = (&prometheus, &prefix);
        async move {
            for panel in panels().into_iter().filter(|panel| TROUBLE_ONLY.contains(&panel.title.as_str()) == trouble) {
                for expr in &panel.exprs {
                    let sent = as_sent(expr, prefix);
                    let what = format!("panel \"{}\" to show data: {sent}", panel.title);
                    wait_for(&what, Duration::from_secs(60), || async {
                        (!prometheus.query(&sent).await.is_empty()).then_some(())
                    })
                    .await;
                }
            }
        }
    };
    show_data(false).await;
    println!("live: every panel shows data under traffic");

    // A poison event: a message deliver cannot read is dead-lettered.
    let publisher = p.broker.publisher().await;
    publisher
        .publish(&p.broker.topology.events_exchange(), "chat", b"not an envelope", Default::default())
        .await
        .expect("the broker confirms");
    prometheus.wait_alert("BridgeDeadLettersRising", Duration::from_secs(60)).await;

    // An account broken in the sandbox: its integration is paused.
    p.sandbox.update_account("other", |a| a.ip_whitelisted = false);
    prometheus.wait_alert("BridgeIntegrationPaused", Duration::from_secs(60)).await;

    // Settings no process can take (a variable none of them has): its alert goes pending, and the
    // trouble panels (this one, the paused one) show data.
    let refused = Tenant { id: "fresh", extra: "comagic_token_env = \"BRIDGE_TEST_VARIABLE_NEVER_SET\"" };
    let file = p.dir.path().join("integrations.toml");
    std::fs::write(&file, integrations_toml(p.sandbox.url(), &[SHOP, OTHER, refused])).unwrap();
    prometheus.wait_alert("BridgeIntegrationNotApplied", Duration::from_secs(60)).await;
    show_data(true).await;

    // The broker gone: both services lose it, and ingest's spool grows under the traffic.
    proxy.cut();
    prometheus.wait_alert("BridgeBrokerDown", Duration::from_secs(60)).await;
    prometheus.wait_alert("BridgeSpoolGrowing", Duration::from_secs(60)).await;
    println!("live: the alerts went pending: {:?}", prometheus.alerts().await);

    running.store(false, Ordering::SeqCst);
    traffic.await.unwrap();
    proxy.restore();
    p.sandbox.update_account("other", |a| a.ip_whitelisted = true);
    drop(prometheus);
    Arc::into_inner(p).unwrap().stop().await;
}
