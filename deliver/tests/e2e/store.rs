//! The PostgreSQL integrations store with two ingest and two deliver processes: a change reaches
//! all four within 2 s; with the database unreachable they keep delivering on their last good set,
//! and catch up once it is back. The database is reached through a proxy the test cuts, so the
//! PostgreSQL other tests share keeps running.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bridge_shared::integrations::store::{Location, Store};
use bridge_shared::integrations::IntegrationsFile;
use bridge_tests::config::{metric_sample, webhook_url};
use bridge_tests::fixtures::{by_test, chat, integration, WEBHOOK_TOKEN};
use bridge_tests::proxy::TcpProxy;
use bridge_tests::sandbox::Upload;
use bridge_tests::wait_for;
use serde_json::json;

use crate::helpers::{comagic_token, Options, Pipeline, Tenant};

const SHOP: Tenant = Tenant { id: "shop", extra: "" };
const OTHER: Tenant = Tenant { id: "other", extra: "" };

/// What `integrations.toml` would say of `id`, as a form for the store.
fn form(api: &str, id: &str, extra: &str) -> bridge_shared::integrations::IntegrationForm {
    let text = integration(id, WEBHOOK_TOKEN, api, &comagic_token(id), extra);
    let file: IntegrationsFile = toml::from_str(&text).unwrap();
    file.integration.into_iter().next().unwrap()
}

async fn sample(http: &reqwest::Client, address: &str, name: &str) -> f64 {
    let page = http.get(format!("{address}/metrics")).send().await.unwrap().text().await.unwrap();
    metric_sample(&page, name)
}

/// How the database goes away.
enum Outage {
    /// Its connections reset and new ones refused, by a proxy in front of it.
    Cut(TcpProxy),
    /// The machine's PostgreSQL stopped and started again (the test runs alone).
    Restart,
}

fn pg_ctl(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
        .expect("Debian's postgresql");
    let status = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctlcluster {action}");
}

impl Outage {
    fn begin(&self) {
        match self {
            Outage::Cut(proxy) => proxy.cut(),
            Outage::Restart => pg_ctl("stop"),
        }
    }

    fn end(&self) {
        match self {
            Outage::Cut(proxy) => proxy.restore(),
            Outage::Restart => pg_ctl("start"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_postgres_store_four_processes_apply_a_change_within_2s_and_ride_out_an_outage() {
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let proxied = bridge_tests::postgres_url().replace("127.0.0.1:5432", &proxy.address().to_string());
    four_processes_ride_out(Outage::Cut(proxy), proxied).await;
}

/// The same with the database itself stopped and started: `scripts/test.sh` runs it alone, as it
/// takes PostgreSQL from every other test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's PostgreSQL: scripts/test.sh runs it alone"]
async fn with_the_postgres_store_four_processes_ride_out_a_database_restart() {
    four_processes_ride_out(Outage::Restart, bridge_tests::postgres_url()).await;
}

async fn four_processes_ride_out(outage: Outage, store_url: String) {
    let direct = bridge_tests::postgres_url();
    let options = Options { integrations_store: Some(store_url), ..Default::default() };
    let p = Pipeline::start("pg-store", &[SHOP, OTHER], options).await;
    let ingest_2 = p.another_ingest(2).await;
    let deliver_2 = p.another_deliver(2).await;
    let ingests = [p.ingest_address().to_owned(), ingest_2.address().to_owned()];
    // Their metrics pages.
    let all = [
        p.ingest_metrics_address().to_owned(),
        ingest_2.metrics_address().to_owned(),
        p.deliver_address().to_owned(),
        deliver_2.address().to_owned(),
    ];
    let store = Store::open(&Location::Postgres { url: direct, scope: p.broker.prefix.clone() }).await.unwrap();
    let env = HashMap::new();
    let api = p.sandbox.url().to_owned();

    // Created in the store: every process has it within 2 s.
    let created = Instant::now();
    store.create(form(&api, "shop", ""), &env, &by_test()).await.unwrap();
    wait_for("all four processes to know `shop`", Duration::from_secs(2), || async {
        for address in &all {
            if sample(&p.http, address, "bridge_config_integrations").await != 1.0 {
                return None;
            }
        }
        Some(())
    })
    .await;
    println!("a created integration reached 2 ingest + 2 deliver in {:.2} s", created.elapsed().as_secs_f64());
    for address in &ingests {
        let url = webhook_url(address, "shop", "chat", WEBHOOK_TOKEN);
        let answer = p.http.post(url).json(&chat(1, json!({}))).send().await.unwrap();
        assert_eq!(answer.status(), 200);
    }
    p.wait_stored("shop", Upload::Chats, 1, Duration::from_secs(20)).await;

    // The database unreachable: each process says so and keeps delivering on its last good set.
    outage.begin();
    for address in &all {
        wait_for("the store to be reported down", Duration::from_secs(10), || async {
            (sample(&p.http, address, "bridge_integrations_store_up").await == 0.0).then_some(())
        })
        .await;
    }
    // A change the processes cannot see yet: made now through the proxy's back, or once the
    // restarted database answers (nobody can write to a stopped one).
    let change = async || {
        let shop = store.get("shop").await.unwrap();
        store
            .update(form(&api, "shop", "default = { campaign_id = 5002 }"), &shop.version, &env, &by_test())
            .await
            .unwrap();
        store.create(form(&api, "other", ""), &env, &by_test()).await.unwrap();
    };
    if let Outage::Cut(_) = outage {
        change().await;
    }
    for (i, address) in ingests.iter().enumerate() {
        let url = webhook_url(address, "shop", "chat", WEBHOOK_TOKEN);
        let answer = p.http.post(url).json(&chat(10 + i as u64, json!({}))).send().await.unwrap();
        assert_eq!(answer.status(), 200, "accepted on the last good set");
    }
    let stored = p.wait_stored("shop", Upload::Chats, 3, Duration::from_secs(20)).await;
    assert!(stored.iter().all(|c| c["campaign_id"] == 5001), "the change is not seen while the store is away");

    // Back: every process catches up (the new default, the new integration).
    outage.end();
    let back = Instant::now();
    if let Outage::Restart = outage {
        wait_for("the restarted database", Duration::from_secs(30), || async { store.list().await.ok().map(drop) })
            .await;
        change().await;
    }
    for address in &all {
        wait_for("every process to catch up", Duration::from_secs(15), || async {
            let up = sample(&p.http, address, "bridge_integrations_store_up").await;
            let known = sample(&p.http, address, "bridge_config_integrations").await;
            (up == 1.0 && known == 2.0).then_some(())
        })
        .await;
    }
    println!("caught up {:.2} s after the database came back", back.elapsed().as_secs_f64());
    let url = webhook_url(&ingests[1], "other", "chat", WEBHOOK_TOKEN);
    assert_eq!(p.http.post(url).json(&chat(20, json!({}))).send().await.unwrap().status(), 200);
    p.wait_stored("other", Upload::Chats, 1, Duration::from_secs(20)).await;
    let url = webhook_url(&ingests[0], "shop", "chat", WEBHOOK_TOKEN);
    assert_eq!(p.http.post(url).json(&chat(30, json!({}))).send().await.unwrap().status(), 200);
    let stored = p.wait_stored("shop", Upload::Chats, 4, Duration::from_secs(20)).await;
    assert_eq!(stored.last().unwrap()["campaign_id"], 5002, "the change made during the outage applies");
    ingest_2.stop().await;
    deliver_2.stop().await;
    p.stop().await;
}

#[tokio::test]
async fn import_integrations_copies_a_file_into_the_postgres_store_and_leaves_existing_ids_alone() {
    let dir = tempfile::tempdir().unwrap();
    let api = "http://127.0.0.1:9/v2.0";
    let file = dir.path().join("from.toml");
    let text = integration("alpha", WEBHOOK_TOKEN, api, "ct-alpha-token", "")
        + &integration("beta", WEBHOOK_TOKEN, api, "ct-beta-token", "");
    std::fs::write(&file, text).unwrap();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let scope = format!("t.import.{nanos}");
    let mut config = bridge_tests::config::BridgeToml::new("amqp://guest:guest@127.0.0.1:5672/%2f", &scope);
    config.console = String::new();
    let config = config.write(dir.path());
    let store_env = [("BRIDGE__INTEGRATIONS_STORE", bridge_tests::postgres_url())];
    let args = ["import-integrations", "--from", file.to_str().unwrap()];

    let first = crate::helpers::deliver_command_with(&config, &args, &store_env).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stdout.contains("imported 2 integrations"), "{}", first.stdout);
    let again = crate::helpers::deliver_command_with(&config, &args, &store_env).await;
    assert!(
        again.stdout.contains("imported 0 integrations") && again.stdout.contains("alpha, beta"),
        "{}",
        again.stdout
    );
    let store = Store::open(&Location::Postgres { url: bridge_tests::postgres_url(), scope }).await.unwrap();
    let stored = store.integrations(&HashMap::new()).await.unwrap();
    assert_eq!(stored.get("beta").unwrap().comagic_token.expose(), "ct-beta-token");
    assert!(!first.stdout.contains("ct-alpha-token") && !first.stderr.contains("ct-alpha-token"));
}
