//! The whole pipeline in one test process: a per-test topology on the real RabbitMQ, the CoMagic
//! sandbox, ingest and deliver on port 0, all over real connections on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bridge_shared::settings::Settings;
use bridge_tests::broker::TestBroker;
use bridge_tests::config::{metric_sample, webhook_url, BridgeToml};
use bridge_tests::fixtures::{integration, WEBHOOK_TOKEN};
use bridge_tests::running::Running;
use bridge_tests::sandbox::{Account, Sandbox, SandboxConfig, Upload};
use bridge_tests::wait_for;
use serde_json::{Map, Value};

/// Sandbox account names and their CoMagic tokens; integration `x` uses account `x`.
pub fn comagic_token(account: &str) -> String {
    format!("ct-{account}-0123456789")
}

pub struct Tenant {
    pub id: &'static str,
    /// Extra lines of its `[[integration]]` (mode, messengers, ...).
    pub extra: &'static str,
}

pub fn integrations_toml(api: &str, tenants: &[Tenant]) -> String {
    tenants.iter().map(|t| integration(t.id, WEBHOOK_TOKEN, api, &comagic_token(t.id), t.extra)).collect()
}

/// `bridge.toml` for one test: its own prefix, spool, ledger, and short pauses (unless
/// `deliver_extra` sets its own).
pub fn write_config(dir: &Path, amqp_url: &str, prefix: &str, linger_ms: u64, deliver_extra: &str) -> PathBuf {
    let pauses =
        if deliver_extra.contains("pause_initial") { "" } else { "pause_initial = \"1s\"\npause_max = \"2s\"" };
    let mut config = BridgeToml::new(amqp_url, prefix);
    config.ingest = "workers = 1".into();
    // Events in doubt wait out one first retry tier (10 s), not a minute, unless a test says.
    let grace =
        if deliver_extra.contains("comagic_timeout") { "" } else { "comagic_timeout = \"10s\"\ndoubt_margin = \"0s\"" };
    config.deliver = format!("batch_linger = \"{linger_ms}ms\"\n{pauses}\n{grace}\n{deliver_extra}");
    config.write(dir)
}

/// The `[deliver]` line that puts the ledger in the test PostgreSQL, shared by every replica of
/// the pipeline (the string lives as long as the test process, as the config's lines must).
pub fn shared_ledger() -> &'static str {
    Box::leak(format!("ledger_postgres = \"{}\"", bridge_tests::postgres_url()).into_boxed_str())
}

#[derive(Debug, Clone, Copy)]
pub enum Service {
    Ingest,
    Deliver,
}

pub struct Pipeline {
    pub broker: TestBroker,
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub http: reqwest::Client,
    ingest: Running,
    deliver: Option<Running>,
    amqp_urls: Vec<String>,
}

#[derive(Default)]
pub struct Options {
    /// Extra `[deliver]` lines.
    pub deliver_extra: &'static str,
    /// `batch_linger` in milliseconds (100 when 0).
    pub linger_ms: u64,
    /// Connect deliver through this URL (a cuttable proxy) instead of straight to the broker.
    pub deliver_amqp_url: Option<String>,
    /// Connect ingest through this URL instead of straight to the broker.
    pub ingest_amqp_url: Option<String>,
    /// `[amqp] urls` of both services (a cluster's nodes, e.g. proxies a test cuts one by one).
    pub amqp_urls: Option<Vec<String>>,
    /// Where the test's topology is declared and looked at (the default test broker otherwise).
    pub test_broker_url: Option<String>,
    /// Do not run deliver in the test process (the test starts the binary itself).
    pub external_deliver: bool,
    /// `integrations_store` of both services (the PostgreSQL store; `integrations.toml` otherwise).
    pub integrations_store: Option<String>,
}

impl Options {
    /// Both services reach the broker through `amqp_url` (a proxy a test cuts or silences).
    pub fn both_through(amqp_url: String) -> Self {
        Options { ingest_amqp_url: Some(amqp_url.clone()), deliver_amqp_url: Some(amqp_url), ..Default::default() }
    }
}

async fn start_ingest(settings: Settings) -> Running {
    Running::start(ingest::startup::Application::build(settings).await.expect("ingest starts"))
}

async fn start_deliver(settings: Settings) -> Running {
    Running::start(deliver::startup::Application::build(settings).await.expect("deliver starts"))
}

impl Pipeline {
    pub async fn start(test: &str, tenants: &[Tenant], options: Options) -> Pipeline {
        let broker = match options.test_broker_url.clone() {
            Some(url) => TestBroker::on(url, test).await,
            None => TestBroker::new(test).await,
        };
        let accounts = tenants.iter().map(|t| Account::sample(t.id, &comagic_token(t.id))).collect();
        let sandbox = Sandbox::start(SandboxConfig { account: accounts }).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("integrations.toml"), integrations_toml(sandbox.url(), tenants)).unwrap();
        let config = write_config(
            dir.path(),
            &broker.url,
            &broker.prefix,
            if options.linger_ms == 0 { 100 } else { options.linger_ms },
            options.deliver_extra,
        );
        if let Some(store) = &options.integrations_store {
            // A top-level key: before the file's first section.
            let text = std::fs::read_to_string(&config).unwrap();
            std::fs::write(&config, format!("integrations_store = \"{store}\"\n{text}")).unwrap();
        }
        let mut ingest_settings = Settings::load(&config).unwrap();
        ingest_settings.amqp.urls = options.amqp_urls.clone().unwrap_or_default();
        if let Some(url) = options.ingest_amqp_url {
            ingest_settings.amqp.url = url;
        }
        let ingest = start_ingest(ingest_settings).await;
        let mut settings = Settings::load(&config).unwrap();
        let amqp_urls = options.amqp_urls.unwrap_or_default();
        settings.amqp.urls = amqp_urls.clone();
        if let Some(url) = options.deliver_amqp_url {
            settings.amqp.url = url;
        }
        let deliver = if options.external_deliver { None } else { Some(start_deliver(settings).await) };
        let http = reqwest::Client::new();
        let pipeline = Pipeline { broker, sandbox, dir, config, http, ingest, deliver, amqp_urls };
        pipeline.wait_ready().await;
        pipeline
    }

    /// ingest's HTTP address (webhooks and health).
    pub fn ingest_address(&self) -> &str {
        self.ingest.address()
    }

    /// Where ingest's `/metrics` is (`[ingest] metrics_listen`).
    pub fn ingest_metrics_address(&self) -> &str {
        self.ingest.metrics_address()
    }

    /// Starts another ingest replica beside the pipeline's own on the pipeline's config, with a spool of its own.
    pub async fn another_ingest(&self, replica: usize) -> Running {
        let mut settings = Settings::load(&self.config).unwrap();
        settings.amqp.urls = self.amqp_urls.clone();
        settings.ingest.spool_dir = self.dir.path().join(format!("spool-{replica}"));
        start_ingest(settings).await
    }

    /// Starts another deliver replica on the pipeline's config, with a ledger of its own.
    pub async fn another_deliver(&self, replica: usize) -> Running {
        let mut settings = Settings::load(&self.config).unwrap();
        settings.amqp.urls = self.amqp_urls.clone();
        settings.deliver.ledger_dir = self.dir.path().join(format!("ledger-{replica}"));
        start_deliver(settings).await
    }

    /// deliver's HTTP address (health and metrics).
    pub fn deliver_address(&self) -> &str {
        self.deliver.as_ref().expect("deliver runs").address()
    }

    /// The status of deliver's `/readyz` (or of ingest's).
    pub async fn ready_status(&self, service: Service) -> u16 {
        let address = match service {
            Service::Ingest => self.ingest.address(),
            Service::Deliver => self.deliver.as_ref().expect("deliver runs").address(),
        };
        self.http.get(format!("{address}/readyz")).send().await.unwrap().status().as_u16()
    }

    async fn wait_ready(&self) {
        for address in std::iter::once(self.ingest.metrics_address()).chain(self.deliver.as_ref().map(Running::address))
        {
            wait_for("the services to reach the broker", Duration::from_secs(20), || async {
                let r = self.http.get(format!("{address}/readyz")).send().await.ok()?;
                let m = self.http.get(format!("{address}/metrics")).send().await.ok()?.text().await.ok()?;
                (r.status() == 200 && m.lines().any(|l| l == "bridge_amqp_connected 1")).then_some(())
            })
            .await;
        }
    }

    /// Posts a webhook to ingest; returns the event id of an accepted one.
    pub async fn post(&self, integration: &str, kind: &str, body: &Value) -> String {
        let url = webhook_url(self.ingest.address(), integration, kind, WEBHOOK_TOKEN);
        let response = self.http.post(url).body(body.to_string()).send().await.expect("ingest answers");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["accepted"], true, "{answer}");
        answer["event_id"].as_str().unwrap().to_owned()
    }

    /// One sample of deliver's `/metrics`, e.g. `bridge_deliver_events_total{kind="chat",outcome="delivered"}`.
    pub async fn deliver_metric(&self, sample: &str) -> f64 {
        self.metric(self.deliver.as_ref().expect("deliver runs").address(), sample).await
    }

    /// One sample of ingest's `/metrics`.
    pub async fn ingest_metric(&self, sample: &str) -> f64 {
        self.metric(self.ingest.metrics_address(), sample).await
    }

    async fn metric(&self, address: &str, sample: &str) -> f64 {
        let page = self.http.get(format!("{address}/metrics")).send().await.unwrap().text().await.unwrap();
        metric_sample(&page, sample)
    }

    /// Waits until the sandbox holds at least `n` items of `upload` for `account`.
    pub async fn wait_stored(
        &self,
        account: &str,
        upload: Upload,
        n: usize,
        deadline: Duration,
    ) -> Vec<Map<String, Value>> {
        wait_for(&format!("{n} {} items in {account}", upload.key()), deadline, || async {
            let stored = self.sandbox.stored(account, upload);
            (stored.len() >= n).then_some(stored)
        })
        .await
    }

    /// Stops the in-process deliver as SIGTERM would: it settles what it holds first.
    /// Waits until the dead-letter queue holds exactly one message, and takes it: its headers.
    pub async fn the_one_dead_letter(&self, what: &str, deadline: Duration) -> bridge_tests::broker::Received {
        let dead_queue = self.broker.topology.dead_queue();
        wait_for(what, deadline, || async { (self.broker.depth(&dead_queue).await == 1).then_some(()) }).await;
        self.broker.take_all(&dead_queue).await.remove(0)
    }

    pub async fn stop_deliver(&mut self) {
        if let Some(running) = self.deliver.take() {
            running.stop().await;
        }
    }

    pub async fn stop(mut self) {
        self.stop_deliver().await;
        self.ingest.stop().await;
        self.sandbox.stop().await;
        self.broker.cleanup().await;
    }
}

/// The stored items' `ext_id`s.
pub fn ext_ids(items: &[Map<String, Value>]) -> Vec<String> {
    items.iter().map(|i| i["ext_id"].as_str().unwrap().to_owned()).collect()
}

/// What one run of a `deliver` command printed, and its exit code.
pub struct CommandRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `deliver --config CONFIG ARGS...` (the real binary) to the end.
pub async fn deliver_command(config: &Path, args: &[&str]) -> CommandRun {
    deliver_command_with(config, args, &[]).await
}

/// The same with extra environment (`BRIDGE__...` settings).
pub async fn deliver_command_with(config: &Path, args: &[&str], env: &[(&str, String)]) -> CommandRun {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_deliver"))
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("the deliver binary runs");
    CommandRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Starts the real deliver binary on the pipeline's config, its log in the test's directory.
pub fn start_deliver_binary(p: &Pipeline, run: usize) -> Child {
    start_deliver_binary_with(p, run, &[])
}

/// The same with extra environment (`BRIDGE__...` settings).
pub fn start_deliver_binary_with(p: &Pipeline, run: usize, env: &[(&str, String)]) -> Child {
    let log = std::fs::File::create(p.dir.path().join(format!("deliver-{run}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_deliver"))
        .args(["--config", p.config.to_str().unwrap()])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("the deliver binary starts")
}

/// Counts the sandbox's stored items every `every`, to find gaps in deliveries afterwards.
pub struct DeliverySampler {
    running: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(std::time::Instant, usize)>>,
}

impl DeliverySampler {
    pub fn start(sandbox: &Sandbox, every: Duration) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let running = std::sync::Arc::new(AtomicBool::new(true));
        let (sandbox, flag) = (sandbox.clone(), running.clone());
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            while flag.load(Ordering::SeqCst) {
                samples.push((std::time::Instant::now(), sandbox.stored_total()));
                tokio::time::sleep(every).await;
            }
            samples
        });
        DeliverySampler { running, task }
    }

    /// Stops sampling; the longest time between `from` and `until` in which nothing new was stored.
    pub async fn longest_gap(self, from: std::time::Instant, until: std::time::Instant) -> Duration {
        self.running.store(false, std::sync::atomic::Ordering::SeqCst);
        let samples = self.task.await.unwrap();
        let within: Vec<_> = samples.into_iter().filter(|(t, _)| *t >= from && *t <= until).collect();
        let (mut longest, mut since) = (Duration::ZERO, within.first().map(|(t, _)| *t));
        for w in within.windows(2) {
            if w[1].1 > w[0].1 {
                if let Some(since) = since {
                    longest = longest.max(w[1].0 - since);
                }
                since = Some(w[1].0);
            }
        }
        longest
    }
}

/// Sends SIGTERM to a deliver binary and waits for it to exit, as an orchestrator stops a replica.
pub fn terminate(child: &mut Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    child.wait().unwrap();
}

/// Posts from `clients` concurrent clients, each taking every `clients`-th index of `ids`; `post`
/// sends index `i` and returns the event id accepted. Returns every id.
pub async fn post_from_clients<F, Fut>(
    p: &std::sync::Arc<Pipeline>,
    clients: u64,
    ids: std::ops::Range<u64>,
    post: F,
) -> std::collections::HashSet<String>
where
    F: Fn(std::sync::Arc<Pipeline>, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = String> + Send,
{
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (p, post, ids) = (p.clone(), post.clone(), ids.clone());
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for i in (ids.start + c..ids.end).step_by(clients as usize) {
                    accepted.push(post(p.clone(), i).await);
                }
                accepted
            })
        })
        .collect();
    let mut all = std::collections::HashSet::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}
