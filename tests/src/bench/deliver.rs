//! The deliver benchmark: a backlog of one busy tenant's chats preloaded into the queue, drained by
//! a real `deliver` process into the in-process sandbox at a given CoMagic latency.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_shared::amqp::topology::event_route;
use bridge_shared::amqp::{connect, Publisher};
use bridge_shared::event::{Envelope, EventId, EventKind, ENVELOPE_SCHEMA};
use bridge_shared::verbox;
use futures_util::future::join_all;
use serde_json::json;

use super::{memory_mib, print_table};
use crate::broker::TestBroker;
use crate::config::BridgeToml;
use crate::fixtures::{chat, integration, WEBHOOK_TOKEN};
use crate::sandbox::{Account, Fault, FaultKind, Sandbox, SandboxConfig};

pub struct DeliverBench {
    pub deliver_bin: PathBuf,
    pub amqp_url: String,
    pub events: u64,
    pub latencies_ms: Vec<u64>,
    pub concurrency: usize,
    /// Pads each chat's first message so the webhook is about this many bytes (0: as it is).
    pub webhook_bytes: usize,
    /// Runs of each latency with the journey off and on, alternated (the order swapping each
    /// round), so the two are compared on the same machine in the same minutes.
    pub rounds: usize,
}

const TOKEN: &str = "ct-bench-0123456789";

/// The queue message of chat `i` of `integration`, padded to about `webhook_bytes`.
pub(super) fn envelope(integration: &str, i: u64, webhook_bytes: usize) -> Vec<u8> {
    let mut chat = chat(i, json!({}));
    let short = chat.to_string().len();
    if webhook_bytes > short {
        chat["data"]["dialog"]["messages"][0]["text"] = json!("x".repeat(webhook_bytes - short));
    }
    let body = chat.to_string();
    let event = verbox::parse(body.as_bytes()).expect("the bench chat parses");
    Envelope {
        schema: ENVELOPE_SCHEMA,
        event_id: EventId::derive(integration, EventKind::Chat, &event, body.as_bytes()),
        integration: integration.into(),
        kind: EventKind::Chat,
        received_at: chrono::Utc::now(),
        accepted_by: Some("loadgen".into()),
        payload: serde_json::value::RawValue::from_string(body).unwrap(),
    }
    .to_bytes()
}

struct Row {
    rate: f64,
    items_per_call: f64,
    peak_mib: f64,
    /// The ledger's directory on disk after the drain.
    ledger_bytes: u64,
}

/// The bytes of every file under `dir`.
pub(super) fn bytes_under(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Publishes the messages `body(0..events)` to the broker's events exchange, 256 in flight.
pub(super) async fn preload(broker: &TestBroker, events: u64, body: impl Fn(u64) -> Vec<u8>) {
    let connection = connect(&broker.url, "verbox-bridge bench").await.expect("RabbitMQ answers");
    let publisher = Arc::new(Publisher::new(&connection, 4, Duration::from_secs(30)).await.unwrap());
    let exchange = broker.topology.events_exchange();
    for chunk in (0..events).collect::<Vec<_>>().chunks(256) {
        let sends = chunk.iter().map(|i| {
            let (publisher, exchange, body) = (publisher.clone(), exchange.clone(), body(*i));
            async move {
                publisher
                    .publish(&exchange, event_route(EventKind::Chat, body.len()), &body, Default::default())
                    .await
                    .expect("confirmed")
            }
        });
        join_all(sends).await;
    }
    let _ = connection.close(200, "preloaded".into()).await;
}

/// Items CoMagic took and the calls that took them, so far.
pub(super) fn delivered(sandbox: &Sandbox) -> (u64, u64) {
    let calls = sandbox.calls();
    let ok: Vec<_> = calls.iter().filter(|c| c.result == "ok").collect();
    (ok.iter().map(|c| c.items as u64).sum::<u64>(), ok.len() as u64)
}

async fn one_run(bench: &DeliverBench, latency_ms: u64, journey: bool) -> Row {
    let broker = TestBroker::on(bench.amqp_url.clone(), "bench-deliver").await;
    preload(&broker, bench.events, |i| envelope("bench", i, bench.webhook_bytes)).await;

    let sandbox = Sandbox::start(SandboxConfig { account: vec![Account::sample("bench", TOKEN)] }).await.unwrap();
    if latency_ms > 0 {
        sandbox.add_fault(Fault { kind: FaultKind::Latency, latency_ms, ..Default::default() });
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("integrations.toml"), integration("bench", WEBHOOK_TOKEN, sandbox.url(), TOKEN, ""))
        .unwrap();
    let mut config = BridgeToml::new(&bench.amqp_url, &broker.prefix);
    let keep = if journey { "7d" } else { "0s" };
    config.deliver = format!("concurrency = {}\njourney_keep = \"{keep}\"", bench.concurrency);
    let config = config.write(dir.path());
    let mut child = Command::new(&bench.deliver_bin)
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the deliver binary starts");
    let mut first = None;
    let mut peak_mib: f64 = 0.0;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (items, calls) = loop {
        let (items, calls) = delivered(&sandbox);
        if items > 0 && first.is_none() {
            first = Some((Instant::now(), items));
        }
        peak_mib = peak_mib.max(memory_mib(child.id()).0);
        if items >= bench.events || Instant::now() > deadline {
            break (items, calls);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (started, at_start) = first.expect("deliveries began");
    let rate = (items - at_start) as f64 / started.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    let ledger_bytes = bytes_under(&dir.path().join("ledger"));
    sandbox.stop().await;
    broker.cleanup().await;
    Row { rate, items_per_call: items as f64 / calls.max(1) as f64, peak_mib, ledger_bytes }
}

/// The median of `values`.
pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

pub async fn run(bench: DeliverBench) {
    let mut rows = Vec::new();
    for latency in bench.latencies_ms.clone() {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for round in 0..bench.rounds.max(1) {
            for journey in if round % 2 == 0 { [false, true] } else { [true, false] } {
                let row = one_run(&bench, latency, journey).await;
                if journey {
                    on.push(row)
                } else {
                    off.push(row)
                }
            }
        }
        let rate = |rows: &[Row]| median(rows.iter().map(|r| r.rate).collect());
        let of = |rows: &[Row], f: fn(&Row) -> f64| median(rows.iter().map(f).collect());
        let kept = of(&on, |r| r.ledger_bytes as f64) - of(&off, |r| r.ledger_bytes as f64);
        rows.push(vec![
            format!("{latency} ms"),
            format!("{:.0}", rate(&off)),
            format!("{:.0}", rate(&on)),
            format!("{:.2}", rate(&on) / rate(&off)),
            format!("{:.1}", of(&on, |r| r.items_per_call)),
            format!("{:.1} / {:.1}", of(&off, |r| r.peak_mib), of(&on, |r| r.peak_mib)),
            format!("{:.0}", kept / bench.events as f64),
        ]);
    }
    println!(
        "\ndeliver benchmark: {} chats of one tenant preloaded ({}), concurrency {}, sandbox in process; \
         the journey off and on alternated, {} runs each, medians\n",
        bench.events,
        if bench.webhook_bytes == 0 { "2 KB each".to_owned() } else { format!("{} bytes each", bench.webhook_bytes) },
        bench.concurrency,
        bench.rounds.max(1),
    );
    let header = [
        "CoMagic latency",
        "events/s, journey off",
        "on",
        "ratio on/off",
        "items per call",
        "peak RSS MiB off / on",
        "journey bytes per event on disk (sled)",
    ];
    print_table(&header, &rows);
}
