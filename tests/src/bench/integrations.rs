//! The integrations benchmark: does the size of the set cost throughput? One busy tenant's load,
//! with 10 and with 1,000 integrations in force, in each store (`integrations.toml` and
//! PostgreSQL): ingest's rate (real binary, 64 in flight, median of rounds), deliver's drain rate
//! of a preloaded backlog (real binary, CoMagic answering at once), and how long a change takes to
//! reach both processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bridge_shared::integrations::store::{Location, Store};
use bridge_shared::integrations::{IntegrationForm, IntegrationsFile};

use super::deliver::{delivered, envelope, preload};
use super::http::KeepAliveClient;
use super::ingest::{closed_loop, take_median, webhook_of_size, Run};
use super::{free_addresses, print_table, sibling};
use crate::broker::TestBroker;
use crate::config::{metric_sample, BridgeToml};
use crate::fixtures::{by_test, integration};
use crate::sandbox::{Account, Sandbox, SandboxConfig};

#[derive(clap::Args)]
pub struct IntegrationsBench {
    #[arg(long, default_value_os_t = sibling("ingest"))]
    pub ingest_bin: PathBuf,
    #[arg(long, default_value_os_t = sibling("deliver"))]
    pub deliver_bin: PathBuf,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    #[arg(long, default_value_t = crate::postgres_url())]
    pub postgres_url: String,
    /// Sizes of the set to compare (the first is the baseline).
    #[arg(long, value_delimiter = ',', default_value = "10,1000")]
    pub counts: Vec<usize>,
    /// Chats preloaded for deliver.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    #[arg(long, default_value_t = 3)]
    pub rounds: u64,
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

const BUSY: &str = "bench";
const TOKEN: &str = "ct-bench-0123456789";
const IN_FLIGHT: usize = 64;

pub(super) fn webhook_token(i: usize) -> String {
    format!("whtok_{i:05}_0123456789abcdefghij")
}

/// The busy integration and `count - 1` idle ones, each with its own webhook token.
fn forms(count: usize, api: &str) -> Vec<IntegrationForm> {
    let text: String = (0..count)
        .map(|i| {
            let id = if i == 0 { BUSY.to_owned() } else { format!("idle-{i:05}") };
            integration(&id, &webhook_token(i), api, TOKEN, "")
        })
        .collect();
    toml::from_str::<IntegrationsFile>(&text).expect("the bench integrations parse").integration
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    File,
    Postgres,
}

struct Stage {
    broker: TestBroker,
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    store: Store,
    config: PathBuf,
}

impl Stage {
    async fn set_up(bench: &IntegrationsBench, kind: Kind, count: usize) -> Stage {
        let broker = TestBroker::on(bench.amqp_url.clone(), "bench-integrations").await;
        let sandbox = Sandbox::start(SandboxConfig { account: vec![Account::sample("bench", TOKEN)] }).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let forms = forms(count, sandbox.url());
        let location = match kind {
            Kind::File => {
                // Written whole: a thousand saves of a thousand-line file would measure the console.
                let file = IntegrationsFile { integration: forms.clone() };
                std::fs::write(dir.path().join("integrations.toml"), toml::to_string(&file).unwrap()).unwrap();
                Location::File(dir.path().join("integrations.toml"))
            }
            Kind::Postgres => Location::Postgres { url: bench.postgres_url.clone(), scope: broker.prefix.clone() },
        };
        let store = Store::open(&location).await.expect("the store opens");
        if kind == Kind::Postgres {
            let env = Default::default();
            for form in forms {
                store.create(form, &env, &by_test()).await.unwrap();
            }
        }
        let mut config = BridgeToml::new(&bench.amqp_url, &broker.prefix);
        let listen = free_addresses(3);
        config.ingest_listen = listen[0].to_string();
        config.ingest_metrics_listen = listen[2].to_string();
        config.ingest = "workers = 0".into();
        config.deliver_listen = listen[1].to_string();
        let config = config.write(dir.path());
        if kind == Kind::Postgres {
            let text = std::fs::read_to_string(&config).unwrap();
            std::fs::write(&config, format!("integrations_store = \"{}\"\n{text}", bench.postgres_url)).unwrap();
        }
        Stage { broker, sandbox, dir, store, config }
    }

    fn start(&self, binary: &Path) -> Child {
        Command::new(binary)
            .args(["--config", self.config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the binary starts")
    }

    fn address(&self, section: &str) -> String {
        let settings = bridge_shared::settings::Settings::load(&self.config).unwrap();
        let listen = if section == "ingest" { settings.ingest.listen } else { settings.deliver.listen };
        format!("http://{listen}")
    }

    /// Where ingest's `/metrics` is (off its webhook port).
    fn ingest_metrics_address(&self) -> String {
        let settings = bridge_shared::settings::Settings::load(&self.config).unwrap();
        format!("http://{}", settings.ingest.metrics_listen)
    }
}

async fn metric(http: &reqwest::Client, address: &str, sample: &str) -> Option<f64> {
    let page = http.get(format!("{address}/metrics")).send().await.ok()?.text().await.ok()?;
    Some(metric_sample(&page, sample))
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Clone, Copy)]
struct Figures {
    ingest: f64,
    deliver: f64,
    change: Duration,
}

async fn measure(bench: &IntegrationsBench, kind: Kind, count: usize) -> Figures {
    let stage = Stage::set_up(bench, kind, count).await;
    let http = reqwest::Client::new();
    let (ingest_address, deliver_address) = (stage.address("ingest"), stage.address("deliver"));
    let ingest_metrics = stage.ingest_metrics_address();
    let mut ingest = stage.start(&bench.ingest_bin);
    wait_until("ingest to connect", async || {
        metric(&http, &ingest_metrics, "bridge_amqp_connected").await == Some(1.0)
    })
    .await;

    // ingest: the busy integration's webhooks, closed loop, median of the rounds.
    let body = webhook_of_size(2048);
    let host_port = ingest_address.trim_start_matches("http://").to_owned();
    let path = format!("/v1/verbox/{BUSY}/chat/{}", webhook_token(0));
    let mut runs: Vec<Run> = Vec::new();
    for _ in 0..bench.rounds {
        let connecting = (0..IN_FLIGHT).map(|_| KeepAliveClient::connect(&host_port, &path, &body));
        let clients = futures_util::future::try_join_all(connecting).await.expect("ingest takes connections");
        runs.push(closed_loop(clients, bench.seconds).await);
        stage.broker.purge(&stage.broker.topology.deliver_queue()).await;
    }
    let ingest_rate = take_median(runs, Run::rate).rate();

    // deliver: a preloaded backlog, drained from the first delivery to the last.
    preload(&stage.broker, bench.events, |i| envelope(BUSY, i, 0)).await;
    let mut deliver = stage.start(&bench.deliver_bin);
    let mut first = None;
    wait_until("the backlog to drain", async || {
        let (items, _) = delivered(&stage.sandbox);
        if items > 0 && first.is_none() {
            first = Some((Instant::now(), items));
        }
        items >= bench.events
    })
    .await;
    let (started, at_start) = first.expect("deliveries began");
    let deliver_rate = (bench.events - at_start) as f64 / started.elapsed().as_secs_f64();

    // A change: one more integration, until both processes hold it.
    let env = Default::default();
    let mut late = forms(1, stage.sandbox.url()).remove(0);
    late.id = "late-arrival".into();
    late.webhook_token = Some(bridge_shared::secret::Secret::new(webhook_token(count + 1)));
    let changed = Instant::now();
    // As the console saves it: the file rewritten whole and renamed, or a row and its notification.
    stage.store.create(late, &env, &by_test()).await.unwrap();
    let want = (count + 1) as f64;
    wait_until("both processes to apply the change", async || {
        metric(&http, &ingest_metrics, "bridge_config_integrations").await == Some(want)
            && metric(&http, &deliver_address, "bridge_config_integrations").await == Some(want)
    })
    .await;
    let change = changed.elapsed();

    for child in [&mut ingest, &mut deliver] {
        let _ = child.kill();
        let _ = child.wait();
    }
    stage.sandbox.stop().await;
    stage.broker.cleanup().await;
    drop(stage.dir);
    Figures { ingest: ingest_rate, deliver: deliver_rate, change }
}

pub async fn run(bench: IntegrationsBench) {
    let mut rows = Vec::new();
    for (kind, name) in [(Kind::File, "integrations.toml"), (Kind::Postgres, "PostgreSQL")] {
        let mut base: Option<Figures> = None;
        for &count in &bench.counts {
            let figures = measure(&bench, kind, count).await;
            let base = *base.get_or_insert(figures);
            rows.push(vec![
                name.to_owned(),
                count.to_string(),
                format!("{:.0}", figures.ingest),
                format!("{:+.1}%", 100.0 * (figures.ingest / base.ingest - 1.0)),
                format!("{:.0}", figures.deliver),
                format!("{:+.1}%", 100.0 * (figures.deliver / base.deliver - 1.0)),
                format!("{:.2}", figures.change.as_secs_f64()),
            ]);
        }
    }
    println!(
        "\nintegrations benchmark: one busy integration among N, ingest {} rounds of {} s at {} in flight \
         (median), deliver draining {} preloaded chats, CoMagic answering at once\n",
        bench.rounds, bench.seconds, IN_FLIGHT, bench.events
    );
    print_table(
        &["store", "integrations", "ingest msg/s", "vs first", "deliver events/s", "vs first", "change applied in s"],
        &rows,
    );
}
