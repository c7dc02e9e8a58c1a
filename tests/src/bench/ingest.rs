//! The ingest benchmark: the raw confirmed-publish rate of the broker and, with the same payload
//! size and in-flight window, the rate through a real `ingest` process, taking turns; then ingest at
//! half its median rate, for latency.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_shared::amqp::{connect, Publisher};
use bridge_shared::event::{Envelope, EventId, EventKind, ENVELOPE_SCHEMA};
use bridge_shared::verbox;
use serde_json::json;

use super::http::KeepAliveClient;
use super::{cpu_seconds, memory_mib, print_table, Latencies};
use crate::broker::TestBroker;
use crate::config::BridgeToml;
use crate::fixtures::{chat, integration, WEBHOOK_TOKEN};
use crate::wait_for;

pub struct IngestBench {
    pub ingest_bin: PathBuf,
    pub amqp_url: String,
    pub concurrency: usize,
    /// Seconds per run.
    pub seconds: u64,
    /// Turns of (raw, ingest); the medians are reported.
    pub rounds: u64,
    pub payload_bytes: usize,
    pub channels: usize,
    /// ingest's `[ingest] workers` (0: one per core).
    pub workers: usize,
}

pub(super) struct Run {
    count: usize,
    elapsed: Duration,
    latencies: Latencies,
}

impl Run {
    pub(super) fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

/// A finished dialog of `size` bytes, made as a real one is: a transcript of short messages, the
/// visitor and an operator taking turns, most stamped twice (the last one padded to the size).
pub fn webhook_of_size(size: usize) -> Vec<u8> {
    let mut body = chat(1, json!({}));
    for id in 3.. {
        let (who, text) = if id % 2 == 1 {
            ("client", "And is delivery to Kazan possible?")
        } else {
            ("operator", "Yes, in two days.")
        };
        let message = json!({"id": id, "whoSend": who, "text": text, "dateTime": "2026-01-10 12:01:00",
            "dateTimeUTC": "2026-01-10 09:01:00", "messageType": null, "isVisibleForClient": true});
        if body.to_string().len() + message.to_string().len() + 1 > size {
            break;
        }
        body["data"]["dialog"]["messages"].as_array_mut().unwrap().push(message);
    }
    let padding = size.saturating_sub(body.to_string().len());
    let last = body["data"]["dialog"]["messages"].as_array_mut().unwrap().last_mut().unwrap();
    last["text"] = format!("{}{}", last["text"].as_str().unwrap(), "x".repeat(padding)).into();
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
        accepted_by: Some("loadgen".into()),
        payload: serde_json::value::RawValue::from_string(String::from_utf8(body.to_vec()).unwrap()).unwrap(),
    }
    .to_bytes()
}

/// One sender of the load: sends an event and waits until it is taken.
pub(super) trait Sender: Send + 'static {
    fn send(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

/// A confirmed publish of the envelope, straight to the broker.
struct RawPublisher {
    publisher: Arc<Publisher>,
    exchange: String,
    envelope: Arc<Vec<u8>>,
}

impl Sender for RawPublisher {
    async fn send(&mut self) {
        self.publisher.publish(&self.exchange, "chat", &self.envelope, Default::default()).await.expect("confirmed")
    }
}

impl Sender for KeepAliveClient {
    async fn send(&mut self) {
        assert_eq!(self.post().await.expect("ingest answers"), 200, "ingest accepted the webhook");
    }
}

/// Runs every sender in a loop of its own for `seconds` and collects every latency.
pub(super) async fn closed_loop<S: Sender>(senders: Vec<S>, seconds: u64) -> Run {
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    sender.send().await;
                    samples.push(t.elapsed());
                }
                samples
            })
        })
        .collect();
    collect(tasks, started).await
}

/// Sends at `rate` per second for `seconds` (open loop, spread over the senders).
async fn open_loop<S: Sender>(senders: Vec<S>, seconds: u64, rate: f64) -> Run {
    let concurrency = senders.len();
    let period = Duration::from_secs_f64(concurrency as f64 / rate);
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, mut sender)| {
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
                    sender.send().await;
                    samples.push(t.elapsed());
                }
            })
        })
        .collect();
    collect(tasks, started).await
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>, started: Instant) -> Run {
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.unwrap());
    }
    Run { count: samples.len(), elapsed: started.elapsed(), latencies: Latencies::new(samples) }
}

/// The ingest binary, its webhook address and its metrics address.
fn start_ingest(bench: &IngestBench, dir: &Path, broker: &TestBroker) -> (Child, String, String) {
    let [listen, metrics_listen] = super::free_addresses(2)[..] else { unreachable!("two addresses asked for") };
    std::fs::write(
        dir.join("integrations.toml"),
        integration("bench", WEBHOOK_TOKEN, "http://127.0.0.1:9/v2.0", "ct-bench", ""),
    )
    .unwrap();
    let mut config = BridgeToml::new(&bench.amqp_url, &broker.prefix);
    config.ingest_listen = listen.to_string();
    config.ingest_metrics_listen = metrics_listen.to_string();
    config.amqp = format!("publish_channels = {}", bench.channels);
    config.ingest = format!("workers = {}", bench.workers);
    let config = config.write(dir);
    let child = Command::new(&bench.ingest_bin)
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the ingest binary starts");
    (child, format!("http://{listen}"), format!("http://{metrics_listen}"))
}

pub async fn run(bench: IngestBench) {
    let body = webhook_of_size(bench.payload_bytes);
    let envelope = Arc::new(envelope_of(&body));

    // The broker alone (confirmed persistent publishes of the envelope into a quorum queue) and the
    // same through a real ingest process, taking turns so that both see the same machine; each
    // queue is emptied after its turn so that no turn starts on a fuller broker.
    let raw_broker = TestBroker::on(bench.amqp_url.clone(), "bench-raw").await;
    let connection = connect(&bench.amqp_url, "verbox-bridge bench").await.expect("RabbitMQ answers");
    let publisher = Arc::new(Publisher::new(&connection, bench.channels, Duration::from_secs(10)).await.unwrap());
    let ingest_broker = TestBroker::on(bench.amqp_url.clone(), "bench-ingest").await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address, metrics_address) = start_ingest(&bench, dir.path(), &ingest_broker);
    let http = reqwest::Client::new();
    wait_for("ingest to connect to the broker", Duration::from_secs(30), || async {
        let m = http.get(format!("{metrics_address}/metrics")).send().await.ok()?.text().await.ok()?;
        m.lines().any(|l| l == "bridge_amqp_connected 1").then_some(())
    })
    .await;
    let clients = || async {
        let (host_port, path) =
            (address.trim_start_matches("http://"), format!("/v1/verbox/bench/chat/{WEBHOOK_TOKEN}"));
        let connecting = (0..bench.concurrency).map(|_| KeepAliveClient::connect(host_port, &path, &body));
        futures_util::future::try_join_all(connecting).await.expect("ingest takes connections")
    };
    let (mut raw_runs, mut ingest_runs) = (Vec::new(), Vec::new());
    let (mut ingest_cpu_us, mut loadgen_cpu_us) = (Vec::new(), Vec::new());
    for _ in 0..bench.rounds {
        let publishers = (0..bench.concurrency)
            .map(|_| RawPublisher {
                publisher: publisher.clone(),
                exchange: raw_broker.topology.events_exchange(),
                envelope: envelope.clone(),
            })
            .collect();
        raw_runs.push(closed_loop(publishers, bench.seconds).await);
        raw_broker.purge(&raw_broker.topology.deliver_queue()).await;
        let clients = clients().await;
        let (ingest_before, own_before) = (cpu_seconds(child.id()), cpu_seconds(std::process::id()));
        let run = closed_loop(clients, bench.seconds).await;
        let per_webhook_us = |before, now| (now - before) * 1e6 / run.count as f64;
        ingest_cpu_us.push(per_webhook_us(ingest_before, cpu_seconds(child.id())));
        loadgen_cpu_us.push(per_webhook_us(own_before, cpu_seconds(std::process::id())));
        ingest_runs.push(run);
        ingest_broker.purge(&ingest_broker.topology.deliver_queue()).await;
    }
    let _ = connection.close(200, "done".into()).await;
    raw_broker.cleanup().await;
    let raw = median_run(raw_runs);
    let full = median_run(ingest_runs);
    // Half the full rate (open loop), for the latency target.
    let half = open_loop(clients().await, bench.seconds, full.median.rate() / 2.0).await;
    let (peak_mib, _) = memory_mib(child.id());
    let spooled = http.get(format!("{metrics_address}/metrics")).send().await.unwrap().text().await.unwrap();
    let spooled = spooled.lines().any(|l| l.contains("outcome=\"spooled\""));
    let _ = child.kill();
    let _ = child.wait();
    ingest_broker.cleanup().await;

    let measured = Measured {
        ingest_cpu_us: take_median(ingest_cpu_us, |us| *us),
        loadgen_cpu_us: take_median(loadgen_cpu_us, |us| *us),
        raw,
        full,
        half,
        peak_mib,
        spooled,
    };
    report(&bench, body.len(), envelope.len(), &measured);
}

/// What [`run`] measured.
struct Measured {
    raw: MedianRun,
    full: MedianRun,
    half: Run,
    peak_mib: f64,
    ingest_cpu_us: f64,
    loadgen_cpu_us: f64,
    spooled: bool,
}

/// The benchmark's table and notes.
fn report(bench: &IngestBench, body_bytes: usize, envelope_bytes: usize, measured: &Measured) {
    let Measured { raw, full, half, peak_mib, ingest_cpu_us, loadgen_cpu_us, spooled } = measured;
    println!(
        "\ningest benchmark: {} B webhook ({} B envelope), {} in flight, {} publish channels, {} workers, \
         {} rounds of {} s each (medians)\n",
        body_bytes, envelope_bytes, bench.concurrency, bench.channels, bench.workers, bench.rounds, bench.seconds,
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
            row("raw confirmed publish (broker only)", &raw.median, "-".into()),
            row("ingest, full speed", &full.median, format!("{peak_mib:.1}")),
            row("ingest, half the full rate", half, format!("{peak_mib:.1}")),
        ],
    );
    let rates = |runs: &MedianRun| runs.rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" ");
    println!("\nrounds, msg/s: raw {}; ingest {}", rates(raw), rates(full));
    println!(
        "CPU per webhook at full speed (medians): ingest {ingest_cpu_us:.1} us, this load generator {loadgen_cpu_us:.1} us"
    );
    println!("ingest / raw (medians): {:.0}%", 100.0 * full.median.rate() / raw.median.rate());
    if *spooled {
        println!("note: some webhooks went to the spool (the broker was slow to confirm)");
    }
}

/// The middle value by `key` (the upper middle of an even count); `values` must not be empty.
pub(super) fn take_median<T>(mut values: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    values.sort_by(|a, b| key(a).total_cmp(&key(b)));
    values.swap_remove(values.len() / 2)
}

/// The run of median rate among several, with every run's rate.
struct MedianRun {
    median: Run,
    rates: Vec<f64>,
}

fn median_run(runs: Vec<Run>) -> MedianRun {
    let rates = runs.iter().map(Run::rate).collect();
    MedianRun { median: take_median(runs, Run::rate), rates }
}
