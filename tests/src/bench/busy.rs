//! The busy benchmark: what a real `deliver` costs while most of its lanes wait for a call slot.
//! 1,000 integrations each get a steady trickle of chats, the sandbox answers every call after
//! 50 ms, and `[deliver] concurrency` is far below the number of lanes, so a batch past its linger
//! usually has to wait. Measured over a window after a warm-up: deliver's CPU (utime + stime from
//! /proc, as a share of one core), CPU per 1,000 events delivered, and events/s. Several binaries
//! (e.g. a build of an earlier commit) take turns round by round, so they meet the same machine.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bridge_shared::amqp::topology::event_route;
use bridge_shared::amqp::{connect, Publisher};
use bridge_shared::event::EventKind;
use futures_util::future::join_all;

use super::deliver::{delivered, envelope};
use super::ingest::take_median;
use super::integrations::webhook_token;
use super::{cpu_seconds, print_table};
use crate::broker::TestBroker;
use crate::config::BridgeToml;
use crate::fixtures::integration;
use crate::sandbox::{Account, Fault, FaultKind, Sandbox, SandboxConfig};
use crate::wait_for;

#[derive(clap::Args)]
pub struct BusyBench {
    /// The deliver binaries to compare, each `label=path`; they take turns round by round.
    #[arg(long = "deliver", value_delimiter = ',', value_parser = labelled, default_value = "current=target/release/deliver")]
    pub binaries: Vec<(String, PathBuf)>,
    #[arg(long, env = "BRIDGE_TEST_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    #[arg(long, default_value_t = 1000)]
    pub integrations: usize,
    /// Chats a second, over all the integrations in turn.
    #[arg(long, default_value_t = 300)]
    pub rate: u64,
    /// How long the sandbox takes to answer each call.
    #[arg(long, default_value_t = 50)]
    pub latency_ms: u64,
    /// deliver's `[deliver] concurrency`.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds of trickle before the measured window (the lanes fill up).
    #[arg(long, default_value_t = 10)]
    pub warm_up: u64,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: u64,
}

fn labelled(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((label, path)) if !label.is_empty() && !path.is_empty() => Ok((label.to_owned(), path.into())),
        _ => Err(format!("`{text}`: expected label=path")),
    }
}

const TOKEN: &str = "ct-bench-0123456789";
/// Events in hand: enough for every lane's share of the trickle while it waits (the default 2,000
/// would cap what 1,000 lanes hold, not the call slots).
const PREFETCH: &str = "prefetch = 20000\nprefetch_bytes = 1073741824";

fn integration_id(i: usize) -> String {
    format!("busy-{i:05}")
}

#[derive(Clone, Copy)]
struct Window {
    cpu_share: f64,
    cpu_ms_per_1000: f64,
    rate: f64,
    items_per_call: f64,
    /// Chats published a second meanwhile (short of `--rate` when the broker is the limit).
    published: f64,
}

/// Publishes `rate` chats a second, integration after integration, until `stop`; counts them in
/// `published`.
async fn trickle(broker: &TestBroker, bench: &BusyBench, stop: &AtomicBool, published: &AtomicU64) {
    let connection = connect(&broker.url, "verbox-bridge bench").await.expect("RabbitMQ answers");
    let publisher = Publisher::new(&connection, 4, Duration::from_secs(30)).await.expect("a publisher");
    let exchange = broker.topology.events_exchange();
    const TICK: Duration = Duration::from_millis(10);
    let per_tick = (bench.rate as f64 * TICK.as_secs_f64()).max(1.0) as u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(per_tick as f64 / bench.rate as f64));
    let mut next: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let sends = (next..next + per_tick).map(|i| {
            let body = envelope(&integration_id(i as usize % bench.integrations), i, 0);
            let (publisher, exchange) = (&publisher, &exchange);
            async move {
                let key = event_route(EventKind::Chat, body.len());
                publisher.publish(exchange, key, &body, Default::default()).await.expect("confirmed")
            }
        });
        join_all(sends).await;
        next += per_tick;
        published.store(next, Ordering::Relaxed);
    }
    let _ = connection.close(200, "trickle over".into()).await;
}

fn start_deliver(
    binary: &PathBuf,
    sandbox: &Sandbox,
    broker: &TestBroker,
    bench: &BusyBench,
) -> (Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file: String = (0..bench.integrations)
        .map(|i| integration(&integration_id(i), &webhook_token(i), sandbox.url(), TOKEN, ""))
        .collect();
    std::fs::write(dir.path().join("integrations.toml"), file).unwrap();
    let mut config = BridgeToml::new(&bench.amqp_url, &broker.prefix);
    config.deliver = format!("concurrency = {}\n{PREFETCH}", bench.concurrency);
    let config = config.write(dir.path());
    let child = Command::new(binary)
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the deliver binary starts");
    (child, dir)
}

async fn one_run(bench: &BusyBench, binary: &PathBuf) -> Window {
    let broker = TestBroker::on(bench.amqp_url.clone(), "bench-busy").await;
    // One account for every integration, with points to spare: the quota is not what is measured.
    let account = Account { minute_limit: u64::MAX / 4, day_limit: u64::MAX / 4, ..Account::sample("bench", TOKEN) };
    let sandbox = Sandbox::start(SandboxConfig { account: vec![account] }).await.unwrap();
    sandbox.add_fault(Fault { kind: FaultKind::Latency, latency_ms: bench.latency_ms, ..Default::default() });
    let (mut child, dir) = start_deliver(binary, &sandbox, &broker, bench);
    let (stop, published) = (AtomicBool::new(false), AtomicU64::new(0));
    let window = {
        let trickling = trickle(&broker, bench, &stop, &published);
        let measuring = async {
            let begun = || async { (delivered(&sandbox).0 > 0).then_some(()) };
            wait_for("deliveries to begin", Duration::from_secs(60), begun).await;
            tokio::time::sleep(Duration::from_secs(bench.warm_up)).await;
            let (cpu, (items, calls), started) = (cpu_seconds(child.id()), delivered(&sandbox), Instant::now());
            let sent = published.load(Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(bench.seconds)).await;
            let (cpu_after, (items_after, calls_after)) = (cpu_seconds(child.id()), delivered(&sandbox));
            let sent = published.load(Ordering::Relaxed) - sent;
            stop.store(true, Ordering::Relaxed);
            let (cpu, items, calls) = (cpu_after - cpu, (items_after - items) as f64, (calls_after - calls) as f64);
            Window {
                cpu_share: cpu / started.elapsed().as_secs_f64(),
                cpu_ms_per_1000: cpu * 1000.0 / items.max(1.0) * 1000.0,
                rate: items / started.elapsed().as_secs_f64(),
                items_per_call: items / calls.max(1.0),
                published: sent as f64 / started.elapsed().as_secs_f64(),
            }
        };
        tokio::join!(trickling, measuring).1
    };
    let _ = child.kill();
    let _ = child.wait();
    drop(dir);
    sandbox.stop().await;
    broker.cleanup().await;
    window
}

pub async fn run(bench: BusyBench) {
    let mut windows: Vec<Vec<Window>> = vec![Vec::new(); bench.binaries.len()];
    for round in 1..=bench.rounds {
        for ((label, binary), runs) in bench.binaries.iter().zip(&mut windows) {
            let w = one_run(&bench, binary).await;
            println!(
                "round {round}, {label}: CPU {:.1}% of a core, {:.0} ms per 1,000 events, {:.0} events/s \
                 ({:.0} published/s), {:.1} items per call",
                100.0 * w.cpu_share,
                w.cpu_ms_per_1000,
                w.rate,
                w.published,
                w.items_per_call
            );
            runs.push(w);
        }
    }
    let median = |runs: &[Window], key: fn(&Window) -> f64| take_median(runs.iter().map(key).collect(), |v| *v);
    let rows: Vec<Vec<String>> = bench
        .binaries
        .iter()
        .zip(&windows)
        .map(|((label, _), runs)| {
            vec![
                label.clone(),
                format!("{:.1}%", 100.0 * median(runs, |w| w.cpu_share)),
                format!("{:.0}", median(runs, |w| w.cpu_ms_per_1000)),
                format!("{:.0}", median(runs, |w| w.rate)),
                format!("{:.1}", median(runs, |w| w.items_per_call)),
            ]
        })
        .collect();
    println!(
        "\nbusy benchmark: {} integrations, {} chats/s over all, CoMagic answering in {} ms, concurrency {}, \
         {} s measured after {} s (median of {} rounds)\n",
        bench.integrations, bench.rate, bench.latency_ms, bench.concurrency, bench.seconds, bench.warm_up, bench.rounds
    );
    print_table(&["deliver", "CPU, % of a core", "CPU ms per 1,000 events", "events/s", "items per call"], &rows);
}
