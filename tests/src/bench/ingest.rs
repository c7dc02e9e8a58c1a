//! The ingest benchmark: the raw confirmed-publish rate of the broker, then the same payload size and
//! in-flight window through a real `ingest` process, at full speed and at half that rate.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_shared::amqp::{connect, Publisher};
use bridge_shared::event::{Envelope, EventId, EventKind, ENVELOPE_SCHEMA};
use bridge_shared::verbox;
use serde_json::json;

use super::{memory_mib, print_table, Latencies};
use crate::broker::TestBroker;
use crate::fixtures::{chat, integration, WEBHOOK_TOKEN};
use crate::wait_for;

pub struct IngestBench {
    pub ingest_bin: PathBuf,
    pub amqp_url: String,
    pub concurrency: usize,
    pub seconds: u64,
    pub payload_bytes: usize,
    pub channels: usize,
}

struct Run {
    count: usize,
    elapsed: Duration,
    latencies: Latencies,
}

impl Run {
    fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

/// A finished dialog whose client message is padded so the webhook body is `size` bytes.
pub fn webhook_of_size(size: usize) -> Vec<u8> {
    let mut body = chat(1, json!({}));
    let padding = size.saturating_sub(body.to_string().len());
    let text = &mut body["data"]["dialog"]["messages"][0]["text"];
    *text = format!("{}{}", text.as_str().unwrap(), "x".repeat(padding)).into();
    body.to_string().into_bytes()
}

/// What ingest publishes for `body`: the broker sees exactly this many bytes per event.
fn envelope_of(body: &[u8]) -> Vec<u8> {
    let event = verbox::parse(body).expect("the bench webhook parses");
    Envelope {
        schema: ENVELOPE_SCHEMA,
        event_id: EventId::derive("bench", EventKind::Chat, &event, body),
        integration: "bench".into(),
        kind: EventKind::Chat,
        received_at: chrono::Utc::now(),
        payload: serde_json::value::RawValue::from_string(String::from_utf8(body.to_vec()).unwrap()).unwrap(),
    }
    .to_bytes()
}

/// Runs `concurrency` loops of `one` for `seconds` and collects every latency.
async fn closed_loop<F, Fut>(concurrency: usize, seconds: u64, one: F) -> Run
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let one = Arc::new(one);
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let one = one.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    one().await;
                    samples.push(t.elapsed());
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.unwrap());
    }
    Run { count: samples.len(), elapsed: started.elapsed(), latencies: Latencies::new(samples) }
}

/// Sends at `rate` per second for `seconds` (open loop, spread over `concurrency` senders).
async fn open_loop<F, Fut>(concurrency: usize, seconds: u64, rate: f64, one: F) -> Run
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let one = Arc::new(one);
    let period = Duration::from_secs_f64(concurrency as f64 / rate);
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let one = one.clone();
            tokio::spawn(async move {
                let first = tokio::time::Instant::now() + period.mul_f64(i as f64 / concurrency as f64);
                let mut ticks = tokio::time::interval_at(first, period);
                let mut samples = Vec::new();
                loop {
                    ticks.tick().await;
                    if Instant::now() >= until {
                        return samples;
                    }
                    let t = Instant::now();
                    one().await;
                    samples.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.unwrap());
    }
    Run { count: samples.len(), elapsed: started.elapsed(), latencies: Latencies::new(samples) }
}

fn start_ingest(bench: &IngestBench, dir: &Path, broker: &TestBroker) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        dir.join("integrations.toml"),
        integration("bench", WEBHOOK_TOKEN, "http://127.0.0.1:9/v2.0", "ct-bench", ""),
    )
    .unwrap();
    let config = dir.join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "integrations = \"integrations.toml\"\n[amqp]\nurl = \"{}\"\ntopology_prefix = \"{}\"\npublish_channels = {}\n\
             [ingest]\nlisten = \"127.0.0.1:{port}\"\nspool_dir = \"{}\"\n",
            bench.amqp_url,
            broker.prefix,
            bench.channels,
            dir.join("spool").display()
        ),
    )
    .unwrap();
    let child = Command::new(&bench.ingest_bin)
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the ingest binary starts");
    (child, format!("http://127.0.0.1:{port}"))
}

pub async fn run(bench: IngestBench) {
    let body = webhook_of_size(bench.payload_bytes);
    let envelope = envelope_of(&body);

    // 1. The broker alone: confirmed persistent publishes of the envelope into the quorum queue.
    let broker = TestBroker::new("bench-raw").await;
    let connection = connect(&bench.amqp_url, "verbox-bridge bench").await.expect("RabbitMQ answers");
    let publisher = Arc::new(Publisher::new(&connection, bench.channels, Duration::from_secs(10)).await.unwrap());
    let exchange = broker.topology.events_exchange();
    let raw = {
        let (publisher, envelope) = (publisher.clone(), Arc::new(envelope.clone()));
        closed_loop(bench.concurrency, bench.seconds, move || {
            let (publisher, envelope, exchange) = (publisher.clone(), envelope.clone(), exchange.clone());
            async move { publisher.publish(&exchange, "chat", &envelope, Default::default()).await.expect("confirmed") }
        })
        .await
    };
    let _ = connection.close(200, "done".into()).await;
    broker.cleanup().await;

    // 2. The same through ingest: full speed, then half of it (open loop) for the latency target.
    let broker = TestBroker::new("bench-ingest").await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address) = start_ingest(&bench, dir.path(), &broker);
    let http = reqwest::Client::new();
    wait_for("ingest to connect to the broker", Duration::from_secs(30), || async {
        let m = http.get(format!("{address}/metrics")).send().await.ok()?.text().await.ok()?;
        m.lines().any(|l| l == "bridge_amqp_connected 1").then_some(())
    })
    .await;
    let url = format!("{address}/v1/verbox/bench/chat/{WEBHOOK_TOKEN}");
    let post = {
        let (http, url, body) = (http.clone(), url.clone(), Arc::new(body.clone()));
        move || {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            async move {
                let response = http.post(url).body(body.to_vec()).send().await.expect("ingest answers");
                assert_eq!(response.status(), 200, "ingest accepted the webhook");
            }
        }
    };
    let full = closed_loop(bench.concurrency, bench.seconds, post.clone()).await;
    let half = open_loop(bench.concurrency, bench.seconds, full.rate() / 2.0, post).await;
    let (peak_mib, _) = memory_mib(child.id());
    let spooled = http.get(format!("{address}/metrics")).send().await.unwrap().text().await.unwrap();
    let spooled = spooled.lines().any(|l| l.contains("outcome=\"spooled\""));
    let _ = child.kill();
    let _ = child.wait();
    broker.cleanup().await;

    println!(
        "\ningest benchmark: {} B webhook ({} B envelope), {} in flight, {} s per run, {} publish channels\n",
        body.len(),
        envelope.len(),
        bench.concurrency,
        bench.seconds,
        bench.channels
    );
    let row = |name: &str, run: &Run, rss: String| {
        vec![
            name.to_owned(),
            format!("{:.0}", run.rate()),
            format!("{:.2}", run.latencies.percentile_ms(50.0)),
            format!("{:.2}", run.latencies.percentile_ms(99.0)),
            rss,
        ]
    };
    print_table(
        &["run", "msg/s", "p50 ms", "p99 ms", "ingest peak RSS MiB"],
        &[
            row("raw confirmed publish (broker only)", &raw, "-".into()),
            row("ingest, full speed", &full, format!("{peak_mib:.1}")),
            row("ingest, half the full rate", &half, format!("{peak_mib:.1}")),
        ],
    );
    println!("\ningest / raw: {:.0}%", 100.0 * full.rate() / raw.rate());
    if spooled {
        println!("note: some webhooks went to the spool (the broker was slow to confirm)");
    }
}
