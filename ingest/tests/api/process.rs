//! The real `ingest` binary: killed with SIGKILL right after answering 200, and stopped with SIGTERM.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bridge_shared::event::Envelope;
use bridge_tests::broker::TestBroker;
use bridge_tests::fixtures::{chat, offline, OTHER_WEBHOOK_TOKEN, WEBHOOK_TOKEN};
use bridge_tests::proxy::{broker_address, TcpProxy};
use bridge_tests::wait_for;
use serde_json::{json, Value};

use crate::helpers::{write_config, SECRET_KEY};

struct Ingest {
    child: Child,
    address: String,
    /// Its `/metrics`, off the webhook port.
    metrics_address: String,
    log: std::path::PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start(config: &std::path::Path, port: u16, run: usize) -> Ingest {
    let log = config.with_file_name(format!("ingest-{run}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let metrics_address = format!("http://127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "debug")
        .env("BRIDGE__INGEST__LISTEN", format!("127.0.0.1:{port}"))
        .env("BRIDGE__INGEST__METRICS_LISTEN", metrics_address.trim_start_matches("http://"))
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("the ingest binary starts");
    let address = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_for("ingest to answer /healthz", Duration::from_secs(30), || async {
        http.get(format!("{address}/healthz")).send().await.ok().filter(|r| r.status() == 200).map(|_| ())
    })
    .await;
    Ingest { child, address, metrics_address, log }
}

async fn post(http: &reqwest::Client, ingest: &Ingest, kind: &str, body: &Value) -> String {
    let url = format!("{}/v1/verbox/acme/{kind}/{WEBHOOK_TOKEN}", ingest.address);
    let answer: Value = http.post(url).body(body.to_string()).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["accepted"], true, "{answer}");
    answer["event_id"].as_str().unwrap().to_owned()
}

fn sigkill(ingest: &mut Ingest) {
    ingest.child.kill().unwrap(); // SIGKILL
    ingest.child.wait().unwrap();
}

fn assert_no_secret_in_log(ingest: &Ingest) {
    let log = std::fs::read_to_string(&ingest.log).unwrap();
    assert!(!log.is_empty(), "the log was captured");
    for secret in [WEBHOOK_TOKEN, OTHER_WEBHOOK_TOKEN, SECRET_KEY, "ct-acme", "guest:guest"] {
        assert!(!log.contains(secret), "a secret in the log: {secret}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_200_loses_nothing() {
    let broker = TestBroker::new("sigkill").await;
    let proxy = TcpProxy::start(broker_address(&broker.url)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &proxy.amqp_url(), &broker.prefix, "");
    let port = free_port();
    let http = reqwest::Client::new();
    let queue = broker.topology.deliver_queue();

    // Broker reachable: a 200 means confirmed, so a kill right after it loses nothing.
    let mut first = start(&config, port, 1).await;
    wait_for("the broker connection", Duration::from_secs(20), || async {
        let m = http.get(format!("{}/metrics", first.metrics_address)).send().await.ok()?.text().await.ok()?;
        m.lines().any(|l| l == "bridge_amqp_connected 1").then_some(())
    })
    .await;
    let mut accepted = HashSet::new();
    for i in 0..50 {
        accepted.insert(post(&http, &first, "chat", &chat(i, json!({}))).await);
    }
    sigkill(&mut first);
    assert_no_secret_in_log(&first);
    assert_eq!(broker.depth(&queue).await, 50, "confirmed before the answer");

    // Broker unreachable: events are fsynced to the spool before the 200; kill, restart, drain.
    proxy.cut();
    let mut second = start(&config, port, 2).await;
    for i in 0..100 {
        accepted.insert(post(&http, &second, "offline", &offline(&format!("c-{i}"), "call me")).await);
    }
    sigkill(&mut second);
    assert_no_secret_in_log(&second);
    proxy.restore();
    let mut third = start(&config, port, 3).await;
    wait_for("the spool to drain into the queue", Duration::from_secs(60), || async {
        (broker.depth(&queue).await >= 150).then_some(())
    })
    .await;
    let ids: Vec<String> = broker
        .take_all(&queue)
        .await
        .iter()
        .map(|m| Envelope::from_bytes(&m.body).unwrap().event_id.to_string())
        .collect();
    assert_eq!(ids.len(), 150, "each accepted event exactly once");
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), accepted);
    sigkill(&mut third);
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_refuses_a_bad_config_with_one_line() {
    let broker = TestBroker::new("sigterm").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &broker.url, &broker.prefix, "");
    let mut ingest = start(&config, free_port(), 1).await;
    let http = reqwest::Client::new();
    wait_for("the broker connection", Duration::from_secs(20), || async {
        let m = http.get(format!("{}/metrics", ingest.metrics_address)).send().await.ok()?.text().await.ok()?;
        m.lines().any(|l| l == "bridge_amqp_connected 1").then_some(())
    })
    .await;
    post(&http, &ingest, "chat", &chat(1, json!({}))).await;
    let pid = ingest.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exited = wait_for("ingest to exit after SIGTERM", Duration::from_secs(30), || {
        let status = ingest.child.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(exited.success(), "{exited:?}");

    let bad = write_config(dir.path(), &broker.url, &broker.prefix, "max_body_bytes = \"big\"");
    let output = Command::new(env!("CARGO_BIN_EXE_ingest")).args(["--config", bad.to_str().unwrap()]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ingest.max_body_bytes"), "{stderr}");
    broker.cleanup().await;
}
