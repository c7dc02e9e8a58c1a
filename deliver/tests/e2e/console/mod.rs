//! `deliver console` over real HTTP: the admin API against the CoMagic sandbox, with the file
//! store (and the PostgreSQL store where a test says so).

mod api;
mod applied;
mod boundaries;
mod browser;
mod history;
mod hostile;
mod journey;
mod journey_page;
mod roles;
mod test_chat;

use std::time::Duration;

use bridge_shared::settings::Settings;
use bridge_tests::config::BridgeToml;
use bridge_tests::running::Running;
use bridge_tests::sandbox::{Account, Sandbox, SandboxConfig};
use deliver::console::{AdminTokens, Console};
use serde_json::{json, Value};

use crate::helpers::Pipeline;

pub const ADMIN_TOKEN: &str = "admin-0123456789abcdefghijklmnop";
pub const COMAGIC_TOKEN: &str = "ct-acme-0123456789";

/// A console on port 0 and an admin client of it.
pub struct ConsoleClient {
    pub url: String,
    pub http: reqwest::Client,
    console: Running,
}

impl ConsoleClient {
    /// A console beside a running pipeline: its ingest, its deliver's state, its sandbox as an
    /// address forms may name.
    pub async fn beside(p: &Pipeline) -> Self {
        Self::beside_with_env(p, Vec::new()).await
    }

    /// [`Self::beside`], the console's environment being `env` (the pipeline's services do not
    /// see it), and every process's metrics page read for the versions it runs.
    pub async fn beside_with_env(p: &Pipeline, env: Vec<(String, String)>) -> Self {
        let mut settings = Settings::load(&p.config).unwrap();
        settings.ingest.public_url = p.ingest_address().to_owned();
        settings.console.deliver_metrics = vec![format!("{}/metrics", p.deliver_address())];
        settings.console.ingest_metrics = vec![format!("{}/metrics", p.ingest_metrics_address())];
        settings.console.comagic_endpoints = vec![p.sandbox.url().to_owned()];
        Self::start_with_env(settings, env).await
    }

    pub async fn start(settings: Settings) -> Self {
        Self::start_with_env(settings, Vec::new()).await
    }

    async fn start_with_env(mut settings: Settings, env: Vec<(String, String)>) -> Self {
        settings.console.listen = "127.0.0.1:0".parse().unwrap();
        let tokens = AdminTokens::parse(Some(ADMIN_TOKEN)).unwrap();
        let built = Console::build_with_env(settings, tokens, env).await;
        let console = Running::start(built.expect("the console starts"));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        ConsoleClient { url: console.address().to_owned(), http, console }
    }

    /// An admin request: status and JSON body.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(ADMIN_TOKEN, method, path, body).await
    }

    /// A request with `token` (an issued one, say): status and JSON body.
    pub async fn call_as(&self, token: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn stop(self) {
        self.console.stop().await;
    }
}

/// A console over an empty `integrations.toml`, the sandbox holding account `acme`.
pub struct RunningConsole {
    pub client: ConsoleClient,
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for RunningConsole {
    type Target = ConsoleClient;
    fn deref(&self) -> &ConsoleClient {
        &self.client
    }
}

impl RunningConsole {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// With settings of the test's own on top (`[console] comagic_endpoints` has the sandbox).
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let sandbox =
            Sandbox::start(SandboxConfig { account: vec![Account::sample("acme", COMAGIC_TOKEN)] }).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = BridgeToml::new("amqp://guest:guest@127.0.0.1:5672/%2f", "t.console");
        let mut settings = Settings::load(&config.write(dir.path())).unwrap();
        settings.ingest.public_url = "https://hooks.example".into();
        settings.console.comagic_endpoints = vec![sandbox.url().to_owned()];
        adjust(&mut settings);
        RunningConsole { client: ConsoleClient::start(settings).await, sandbox, dir }
    }

    pub async fn stop(self) {
        self.client.stop().await;
        self.sandbox.stop().await;
    }
}

/// A form that passes validation and `deliver check` against the sandbox's account `acme`.
pub fn valid_form(api: &str) -> Value {
    json!({
        "id": "acme",
        "webhook_token": "whtok_0123456789abcdefghijklmn",
        "comagic_api": api,
        "comagic_token": COMAGIC_TOKEN,
        "employee_id": 101,
        "timezone": "Europe/Moscow",
        "default": {"campaign_id": 5001},
        "messengers": {"telegram": {"campaign_id": 5002}},
    })
}
