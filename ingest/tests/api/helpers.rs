use std::path::PathBuf;
use std::time::Duration;

use bridge_shared::settings::Settings;
use bridge_tests::broker::TestBroker;
use bridge_tests::config::{metric_sample, webhook_url, BridgeToml};
use bridge_tests::fixtures::{integration, OTHER_WEBHOOK_TOKEN, WEBHOOK_TOKEN};
use bridge_tests::running::Running;
use bridge_tests::wait_for;
use ingest::startup::Application;
use serde_json::Value;

pub const SECRET_KEY: &str = "verbox-secret-key-1";

/// Three integrations: `acme` (plain), `guarded` (secretKey required, offline off) and `sleeping`
/// (inactive).
pub fn integrations_toml() -> String {
    let api = "http://127.0.0.1:9/v2.0";
    [
        integration("acme", WEBHOOK_TOKEN, api, "ct-acme", ""),
        integration(
            "guarded",
            OTHER_WEBHOOK_TOKEN,
            api,
            "ct-guarded",
            &format!("verbox_secret_key = \"{SECRET_KEY}\"\noffline_enabled = false"),
        ),
        integration("sleeping", WEBHOOK_TOKEN, api, "ct-sleeping", "active = false"),
    ]
    .concat()
}

pub struct TestApp {
    pub address: String,
    /// Its `/metrics`, off the webhook port.
    pub metrics_address: String,
    pub broker: TestBroker,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    ingest: Running,
}

#[derive(Default)]
pub struct Options {
    /// Connect through this URL (a proxy) instead of straight to the broker.
    pub amqp_url: Option<String>,
    pub spool_max_bytes: Option<u64>,
    pub max_body_bytes: Option<usize>,
    /// The spool somewhere else than the test's directory (a small file system).
    pub spool_dir: Option<PathBuf>,
    pub drain_on_stop: Option<Duration>,
}

/// Writes `bridge.toml` and `integrations.toml` into `dir` for a test's broker prefix.
pub fn write_config(dir: &std::path::Path, amqp_url: &str, prefix: &str, extra_ingest: &str) -> PathBuf {
    std::fs::write(dir.join("integrations.toml"), integrations_toml()).unwrap();
    let mut config = BridgeToml::new(amqp_url, prefix);
    config.ingest = format!("workers = 2\n{extra_ingest}");
    config.write(dir)
}

pub async fn spawn_app(test: &str, options: Options) -> TestApp {
    let broker = TestBroker::new(test).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), options.amqp_url.as_deref().unwrap_or(&broker.url), &broker.prefix, "");
    let mut settings = Settings::load(&config).unwrap();
    if let Some(max) = options.spool_max_bytes {
        settings.ingest.spool_max_bytes = max;
    }
    if let Some(max) = options.max_body_bytes {
        settings.ingest.max_body_bytes = max;
    }
    if let Some(spool_dir) = options.spool_dir {
        settings.ingest.spool_dir = spool_dir;
    }
    if let Some(drain_on_stop) = options.drain_on_stop {
        settings.ingest.drain_on_stop = drain_on_stop;
    }
    let ingest = Running::start(Application::build(settings).await.expect("ingest starts"));
    TestApp {
        address: ingest.address().to_owned(),
        metrics_address: ingest.metrics_address().to_owned(),
        broker,
        http: reqwest::Client::new(),
        dir,
        ingest,
    }
}

impl TestApp {
    pub fn webhook_url(&self, integration: &str, kind: &str, token: &str) -> String {
        webhook_url(&self.address, integration, kind, token)
    }

    pub async fn post(
        &self,
        integration: &str,
        kind: &str,
        token: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let response =
            self.http.post(self.webhook_url(integration, kind, token)).body(body).send().await.expect("ingest answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("a JSON body, got {text:?}")))
    }

    pub async fn post_json(&self, integration: &str, kind: &str, body: &Value) -> (u16, Value) {
        self.post(integration, kind, WEBHOOK_TOKEN, body.to_string()).await
    }

    pub async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.metrics_address)).send().await.unwrap().text().await.unwrap()
    }

    /// The value of one sample line of `/metrics`, e.g. `bridge_ingest_spool_events`.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_sample(&self.metrics().await, sample)
    }

    pub async fn wait_connected(&self) {
        wait_for("the broker connection", Duration::from_secs(20), || async {
            (self.metric("bridge_amqp_connected").await == 1.0).then_some(())
        })
        .await;
    }

    pub async fn stop(self) {
        let (broker, _dir) = self.shut_down().await;
        broker.cleanup().await;
    }

    /// Stops ingest as SIGTERM does, and hands back the test's broker and directory to look at.
    pub async fn shut_down(self) -> (TestBroker, tempfile::TempDir) {
        self.ingest.stop().await;
        (self.broker, self.dir)
    }
}
