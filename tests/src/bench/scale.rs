//! The scale-out benchmark on the local 3-node cluster (`scripts/cluster.sh`): a backlog of 20 busy
//! tenants' chats drained by 1, 2 and 3 deliver replicas sharing the PostgreSQL ledger, CoMagic
//! answering in 50 ms; then the gap in deliveries when the node leading the deliver queue is
//! SIGKILLed under load (the median of a few kills).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::deliver::{delivered, envelope, median, preload};
use super::{cpu_seconds, free_addresses, print_table};
use crate::broker::TestBroker;
use crate::config::{metric_sample, BridgeToml};
use crate::fixtures::{integration, WEBHOOK_TOKEN};
use crate::sandbox::{Account, Fault, FaultKind, Sandbox, SandboxConfig};

#[derive(clap::Args)]
pub struct ScaleBench {
    #[arg(long, default_value = "target/release/deliver")]
    pub deliver_bin: PathBuf,
    /// `scripts/cluster.sh`, to find and kill the leader node.
    #[arg(long, default_value = "scripts/cluster.sh")]
    pub cluster_script: PathBuf,
    /// The cluster's nodes, comma-separated (`scripts/cluster.sh urls`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub amqp_urls: Vec<String>,
    /// The ledger database the replicas share.
    #[arg(long, default_value_t = crate::postgres_url())]
    pub postgres_url: String,
    #[arg(long, default_value_t = 30_000)]
    pub events: u64,
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub tenants: u64,
    /// CoMagic's latency.
    #[arg(long, default_value_t = 50)]
    pub latency_ms: u64,
    /// `[deliver] concurrency` of each replica.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub replicas: Vec<usize>,
    /// Leader-node kills to measure the delivery gap over (0: none).
    #[arg(long, default_value_t = 3)]
    pub kills: usize,
    /// Drains of each replica count with the journey off and on, alternated.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
}

fn tenant(i: u64, tenants: u64) -> String {
    format!("t{:02}", i % tenants)
}

fn token(tenant: &str) -> String {
    format!("ct-{tenant}-0123456789")
}

/// A topology on the cluster, the backlog in it, a sandbox with every tenant's account, and the
/// replicas' config.
struct Stage {
    broker: TestBroker,
    sandbox: Sandbox,
    dir: tempfile::TempDir,
}

impl Stage {
    async fn set_up(bench: &ScaleBench, events: u64, journey: bool) -> Stage {
        let broker = TestBroker::on(bench.amqp_urls[0].clone(), "bench-scale").await;
        preload(&broker, events, |i| envelope(&tenant(i, bench.tenants), i, 0)).await;
        let names: Vec<String> = (0..bench.tenants).map(|i| tenant(i, bench.tenants)).collect();
        let accounts = names.iter().map(|n| Account::sample(n, &token(n))).collect();
        let sandbox = Sandbox::start(SandboxConfig { account: accounts }).await.unwrap();
        sandbox.add_fault(Fault { kind: FaultKind::Latency, latency_ms: bench.latency_ms, ..Default::default() });
        let dir = tempfile::tempdir().unwrap();
        let integrations: String =
            names.iter().map(|n| integration(n, WEBHOOK_TOKEN, sandbox.url(), &token(n), "")).collect();
        std::fs::write(dir.path().join("integrations.toml"), integrations).unwrap();
        let mut config = BridgeToml::new(&bench.amqp_urls[0], &broker.prefix);
        config.amqp_urls = bench.amqp_urls.clone();
        let keep = if journey { "7d" } else { "0s" };
        config.deliver = format!(
            "ledger_postgres = \"{}\"\nconcurrency = {}\njourney_keep = \"{keep}\"",
            bench.postgres_url, bench.concurrency
        );
        config.write(dir.path());
        Stage { broker, sandbox, dir }
    }

    fn start_replicas(&self, bench: &ScaleBench, n: usize) -> Vec<Replica> {
        free_addresses(n)
            .into_iter()
            .map(|listen| {
                let child = Command::new(&bench.deliver_bin)
                    .args(["--config", self.dir.path().join("bridge.toml").to_str().unwrap()])
                    .env("RUST_LOG", "warn")
                    .env("BRIDGE__DELIVER__LISTEN", listen.to_string())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("the deliver binary starts");
                Replica { child, address: format!("http://{listen}") }
            })
            .collect()
    }

    async fn tear_down(mut self, mut replicas: Vec<Replica>) {
        for replica in &mut replicas {
            let _ = replica.child.kill();
            let _ = replica.child.wait();
        }
        self.sandbox.stop().await;
        // The node this connection was on may have been killed and restarted meanwhile.
        self.broker.reconnect().await;
        self.broker.cleanup().await;
    }
}

struct Replica {
    child: Child,
    /// Its `/metrics`.
    address: String,
}

impl Replica {
    /// Acknowledgement frames it has sent, of every kind.
    async fn ack_frames(&self) -> f64 {
        let page = reqwest::get(format!("{}/metrics", self.address)).await.unwrap().text().await.unwrap();
        ["ack_multiple", "ack", "nack"]
            .iter()
            .map(|frame| metric_sample(&page, &format!("bridge_deliver_ack_frames_total{{frame=\"{frame}\"}}")))
            .sum()
    }
}

/// What one drain measured.
struct Drain {
    /// From the first delivery to the last.
    events_per_second: f64,
    items_per_call: f64,
    /// The three nodes' CPU time over the drain, per event.
    broker_cpu_us_per_event: f64,
    events_per_ack_frame: f64,
    /// How much the journey's table (with its indexes) grew, per event.
    journey_bytes_per_event: f64,
}

/// The journey's table with its indexes and TOAST, in bytes (0 before any replica made it).
async fn journey_table_bytes(bench: &ScaleBench) -> f64 {
    let postgres = bridge_shared::postgres::Postgres::new(Duration::from_secs(10));
    let Ok(database) = postgres.database(&bench.postgres_url, bridge_shared::postgres::Role::Ledger) else {
        return 0.0;
    };
    let sql = "SELECT coalesce(pg_total_relation_size(to_regclass('bridge_journey')), 0)::float8";
    database.query_opt(sql, &[]).await.ok().flatten().map_or(0.0, |row| row.get(0))
}

/// CPU seconds the cluster's nodes have used so far.
fn broker_cpu_seconds(bench: &ScaleBench) -> f64 {
    cluster(bench, &["pids"]).lines().filter_map(|pid| pid.trim().parse().ok()).map(cpu_seconds).sum()
}

/// The backlog drained by `replicas` replicas.
async fn drain(bench: &ScaleBench, replicas: usize, journey: bool) -> Drain {
    let stage = Stage::set_up(bench, bench.events, journey).await;
    let table_before = journey_table_bytes(bench).await;
    let children = stage.start_replicas(bench, replicas);
    let cpu_before = broker_cpu_seconds(bench);
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    let (items, calls) = loop {
        let (items, calls) = delivered(&stage.sandbox);
        if items > 0 && first.is_none() {
            first = Some((Instant::now(), items));
        }
        if items >= bench.events || Instant::now() > deadline {
            break (items, calls);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (started, at_start) = first.expect("deliveries began");
    let events_per_second = (items - at_start) as f64 / started.elapsed().as_secs_f64();
    let broker_cpu = broker_cpu_seconds(bench) - cpu_before;
    let mut frames = 0.0;
    for replica in &children {
        frames += replica.ack_frames().await;
    }
    stage.tear_down(children).await;
    let journey_bytes_per_event = (journey_table_bytes(bench).await - table_before) / items.max(1) as f64;
    Drain {
        events_per_second,
        items_per_call: items as f64 / calls.max(1) as f64,
        broker_cpu_us_per_event: broker_cpu * 1e6 / items.max(1) as f64,
        events_per_ack_frame: items as f64 / frames.max(1.0),
        journey_bytes_per_event,
    }
}

fn cluster(bench: &ScaleBench, args: &[&str]) -> String {
    let out = Command::new(&bench.cluster_script).args(args).output().expect("scripts/cluster.sh runs");
    assert!(out.status.success(), "scripts/cluster.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The longest time without a new delivery after the deliver queue's leader node is SIGKILLed
/// under load (two replicas), then the node is started again.
async fn kill_gap(bench: &ScaleBench) -> Duration {
    let backlog = bench.events * 2;
    let stage = Stage::set_up(bench, backlog, true).await;
    let children = stage.start_replicas(bench, 2);
    while delivered(&stage.sandbox).0 < backlog / 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader = cluster(bench, &["leader", &stage.broker.topology.deliver_queue()]);
    cluster(bench, &["kill", &leader]);
    let (mut last_count, mut last_change) = (delivered(&stage.sandbox).0, Instant::now());
    let mut longest = Duration::ZERO;
    let window = Instant::now() + Duration::from_secs(60);
    while Instant::now() < window && last_count < backlog {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let count = delivered(&stage.sandbox).0;
        if count > last_count {
            longest = longest.max(last_change.elapsed());
            (last_count, last_change) = (count, Instant::now());
        }
    }
    longest = longest.max(if last_count < backlog { last_change.elapsed() } else { Duration::ZERO });
    cluster(bench, &["start-node", &leader]);
    stage.tear_down(children).await;
    longest
}

pub async fn run(bench: ScaleBench) {
    let mut rows = Vec::new();
    let mut base = None;
    for replicas in bench.replicas.clone() {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for round in 0..bench.rounds.max(1) {
            for journey in if round % 2 == 0 { [false, true] } else { [true, false] } {
                let drain = drain(&bench, replicas, journey).await;
                if journey {
                    on.push(drain)
                } else {
                    off.push(drain)
                }
            }
        }
        let of = |drains: &[Drain], f: fn(&Drain) -> f64| median(drains.iter().map(f).collect());
        let (rate_off, rate) = (of(&off, |d| d.events_per_second), of(&on, |d| d.events_per_second));
        let base = *base.get_or_insert(rate);
        rows.push(vec![
            replicas.to_string(),
            format!("{rate_off:.0}"),
            format!("{rate:.0}"),
            format!("{:.2}", rate / rate_off),
            format!("{:.2}×", rate / base),
            format!("{:.1}", of(&on, |d| d.items_per_call)),
            format!("{:.0}", of(&on, |d| d.broker_cpu_us_per_event)),
            format!("{:.1}", of(&on, |d| d.events_per_ack_frame)),
            format!("{:.0}", of(&on, |d| d.journey_bytes_per_event)),
        ]);
    }
    println!(
        "\nscale-out benchmark: {} chats of {} tenants preloaded on the 3-node cluster, CoMagic {} ms, \
         [deliver] concurrency {} per replica, PostgreSQL ledger; the journey off and on alternated, \
         {} drains each, medians (the other columns: journey on)\n",
        bench.events,
        bench.tenants,
        bench.latency_ms,
        bench.concurrency,
        bench.rounds.max(1)
    );
    let header = [
        "deliver replicas",
        "events/s, journey off",
        "on",
        "ratio on/off",
        "ratio to one",
        "items per call",
        "broker CPU µs per event",
        "events per ack frame",
        "journey bytes per event (PostgreSQL)",
    ];
    print_table(&header, &rows);
    if bench.kills == 0 {
        return;
    }
    let mut gaps = Vec::new();
    for _ in 0..bench.kills {
        gaps.push(kill_gap(&bench).await);
    }
    let mut sorted = gaps.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    println!("\nthe deliver queue's leader node SIGKILLed under load, two replicas ({} kills)\n", bench.kills);
    let mut rows: Vec<Vec<String>> = gaps
        .iter()
        .enumerate()
        .map(|(i, g)| vec![format!("kill {}", i + 1), format!("{:.1}", g.as_secs_f64())])
        .collect();
    rows.push(vec!["median".into(), format!("{:.1}", median.as_secs_f64())]);
    print_table(&["", "longest gap in deliveries, s"], &rows);
}
