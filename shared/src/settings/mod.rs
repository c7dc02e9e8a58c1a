//! `bridge.toml`: typed settings layered from the file, then `BRIDGE__<SECTION>__<KEY>` variables.
//! Every key has a default; an invalid one stops the process with one line naming it. Durations are
//! read once, into `Duration`, from text like `10s`, `5m` or `24h`; every duration, size and count
//! an operator can set is range-checked, so no absurd value reaches the arithmetic that uses it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.into(), message: message.into() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub ingest: IngestSettings,
    pub deliver: DeliverSettings,
    pub console: ConsoleSettings,
    /// The tenants' integrations; relative paths are resolved beside `bridge.toml`.
    pub integrations: PathBuf,
    /// Where the integrations are kept when several machines share them: `postgres://…`
    /// (`BRIDGE__INTEGRATIONS_STORE`). Empty keeps them in the file `integrations`.
    pub integrations_store: String,
    /// How long any one PostgreSQL operation (connecting included) may take before the database
    /// counts as not answering, for the ledger and the integrations store alike.
    #[serde(with = "duration_text")]
    pub postgres_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpSettings {
    /// The broker, when it is one node.
    pub url: String,
    /// The cluster's nodes, tried in turn (overrides `url` when set). In the environment, a
    /// comma-separated list: `BRIDGE__AMQP__URLS=amqp://u:p@rabbit-0,amqp://u:p@rabbit-1`.
    #[serde(with = "address_list")]
    pub urls: Vec<String>,
    /// How many nodes hold each quorum queue when it is created (at most the cluster's size).
    pub quorum_replicas: u8,
    /// Prefix of every exchange and queue name (`bridge` gives `bridge.events`, ...). Tests use a
    /// unique prefix each so they run in parallel on one broker.
    pub topology_prefix: String,
    /// Publisher-confirm channels kept open by ingest.
    pub publish_channels: usize,
    /// How long a publish waits for its confirm.
    #[serde(with = "duration_text")]
    pub publish_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// The public webhook port (with `/healthz` and `/readyz` for the probes).
    pub listen: SocketAddr,
    /// `/metrics` (and `/healthz`, `/readyz`), off the public port: the page names integrations
    /// and why they are paused or refused. Keep it on an internal network.
    pub metrics_listen: SocketAddr,
    pub public_url: String,
    pub spool_dir: PathBuf,
    pub max_body_bytes: usize,
    /// Bytes of events the spool holds at most; past it, webhooks get 503 while the broker is down.
    /// Keep it at most half the spool's volume: sled's log needs room of its own.
    pub spool_max_bytes: u64,
    /// actix workers; 0 = one per core.
    pub workers: usize,
    /// At shutdown, how long the spool may take to reach the broker before ingest exits anyway
    /// (keep it within the orchestrator's grace period; what is left waits for the next start or
    /// `ingest drain-spool`).
    #[serde(with = "duration_text")]
    pub drain_on_stop: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverSettings {
    pub listen: SocketAddr,
    pub prefetch: u16,
    /// Bytes of event messages deliver may hold in hand: half for small events (up to `prefetch`
    /// of them), half for large ones (as many as fit at `[ingest] max_body_bytes`). Each share is
    /// its queue's prefetch, which acks waiting to be coalesced (`deliver::acks`) also occupy.
    pub prefetch_bytes: u64,
    pub batch_max: usize,
    /// How long a batch waits to fill.
    #[serde(with = "duration_text")]
    pub batch_linger: Duration,
    pub ledger_dir: PathBuf,
    /// The ledger several deliver replicas share (`postgres://user:password@host/db`); empty keeps
    /// the single-process ledger in `ledger_dir`. Required when more than one deliver runs.
    pub ledger_postgres: String,
    /// How long a delivered ext_id stays in the ledger, e.g. `7d`; at least `retry_for`, within
    /// which redeliveries come. After that CoMagic's own `duplicate_entity` still stops a repeat.
    #[serde(with = "duration_text")]
    pub ledger_keep: Duration,
    /// How long each event's journey is kept, e.g. `7d`; `0s` keeps none (the journey is off).
    #[serde(with = "duration_text")]
    pub journey_keep: Duration,
    /// An event neither delivered nor dead-lettered this long after ingest took it (and not
    /// waiting on purpose) counts as lost in the middle (`bridge_journey_lost`).
    #[serde(with = "duration_text")]
    pub journey_lost_after: Duration,
    /// How long transient failures are retried before an event is dead-lettered, e.g. `24h`.
    #[serde(with = "duration_text")]
    pub retry_for: Duration,
    /// CoMagic requests in flight at once, over all tenants.
    pub concurrency: usize,
    /// The first pause of an integration whose account refuses us (doubles up to `pause_max`).
    #[serde(with = "duration_text")]
    pub pause_initial: Duration,
    #[serde(with = "duration_text")]
    pub pause_max: Duration,
    /// How long the events of a paused integration wait in the retry queues before they are
    /// dead-lettered as `tenant_paused` (replayable once the account is fixed).
    #[serde(with = "duration_text")]
    pub park_for: Duration,
    /// The longest a CoMagic call may take, connection included; a call still unanswered then is
    /// given up on, and its events are in doubt (CoMagic may still take it).
    #[serde(with = "duration_text")]
    pub comagic_timeout: Duration,
    /// How long past `comagic_timeout` an event whose upload is in doubt waits before CoMagic's
    /// report is asked whether it arrived: the report must not be asked while the earlier call can
    /// still land, nor before the report lists what was stored (its lag is not documented).
    #[serde(with = "duration_text")]
    pub doubt_margin: Duration,
}

impl DeliverSettings {
    /// How long an event in doubt waits, from when the doubt arose, before the report is asked.
    pub fn doubt_grace(&self) -> Duration {
        self.comagic_timeout + self.doubt_margin
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            amqp: AmqpSettings::default(),
            ingest: IngestSettings::default(),
            deliver: DeliverSettings::default(),
            console: ConsoleSettings::default(),
            integrations: PathBuf::from("integrations.toml"),
            integrations_store: String::new(),
            postgres_timeout: DEFAULT_POSTGRES_TIMEOUT,
        }
    }
}

impl AmqpSettings {
    /// The addresses to try: `urls`, or `url` alone.
    pub fn nodes(&self) -> Vec<String> {
        if self.urls.is_empty() {
            vec![self.url.clone()]
        } else {
            self.urls.clone()
        }
    }

    /// What a binary needs to keep its broker session (`name` shows in the management UI).
    pub fn session(
        &self,
        topology: crate::amqp::Topology,
        name: &'static str,
        connect_failures: prometheus::IntCounter,
    ) -> crate::amqp::session::SessionConfig {
        crate::amqp::session::SessionConfig {
            urls: self.nodes(),
            topology: topology.with_quorum_replicas(self.quorum_replicas),
            channels: self.publish_channels,
            publish_timeout: self.publish_timeout,
            connection_name: name,
            connect_failures,
        }
    }
}

impl Default for AmqpSettings {
    fn default() -> Self {
        AmqpSettings {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            urls: Vec::new(),
            quorum_replicas: crate::amqp::topology::DEFAULT_QUORUM_REPLICAS,
            topology_prefix: "bridge".into(),
            publish_channels: 4,
            publish_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            listen: "0.0.0.0:8080".parse().expect("literal address"),
            metrics_listen: "0.0.0.0:9094".parse().expect("literal address"),
            public_url: "http://127.0.0.1:8080".into(),
            spool_dir: PathBuf::from("var/spool"),
            max_body_bytes: 1 << 20,
            spool_max_bytes: 512 << 20,
            workers: 0,
            drain_on_stop: Duration::from_secs(20),
        }
    }
}

impl Default for DeliverSettings {
    fn default() -> Self {
        DeliverSettings {
            listen: "0.0.0.0:9091".parse().expect("literal address"),
            prefetch: 2000,
            prefetch_bytes: 64 << 20,
            batch_max: 50,
            batch_linger: Duration::from_millis(200),
            ledger_dir: PathBuf::from("var/ledger"),
            ledger_postgres: String::new(),
            ledger_keep: Duration::from_secs(7 * DAY),
            journey_keep: Duration::from_secs(7 * DAY),
            journey_lost_after: Duration::from_secs(3600),
            retry_for: Duration::from_secs(DAY),
            concurrency: 16,
            pause_initial: Duration::from_secs(300),
            pause_max: Duration::from_secs(3600),
            park_for: Duration::from_secs(7 * DAY),
            comagic_timeout: Duration::from_secs(30),
            doubt_margin: Duration::from_secs(30),
        }
    }
}

impl Settings {
    /// Reads `path` (a missing file means all defaults), applies the process environment, validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    pub fn load_with_env(path: &Path, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(ConfigError::Read { path: path.display().to_string(), source }),
        };
        let mut settings = Self::from_toml(&text, env).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax { path: path.display().to_string(), message },
            other => other,
        })?;
        // Relative paths in the file are relative to the file, not to where the process started.
        if let Some(dir) = path.parent() {
            for p in [&mut settings.integrations, &mut settings.ingest.spool_dir, &mut settings.deliver.ledger_dir] {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(settings)
    }

    pub fn from_toml(text: &str, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: String::new(),
            message: syntax_message(&e, text),
        })?;
        apply_env_overrides(&mut table, env)?;
        renamed::read_old_names(&mut table)?;
        let settings: Settings = deserialize_naming_key(toml::Value::Table(table))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let is_amqp = |url: &str| url.starts_with("amqp://") || url.starts_with("amqps://");
        if !is_amqp(&self.amqp.url) {
            return Err(ConfigError::invalid("amqp.url", "must start with amqp:// or amqps://"));
        }
        if let Some(i) = self.amqp.urls.iter().position(|url| !is_amqp(url)) {
            return Err(ConfigError::invalid(format!("amqp.urls[{i}]"), "must start with amqp:// or amqps://"));
        }
        for (key, url) in [
            ("deliver.ledger_postgres", &self.deliver.ledger_postgres),
            ("integrations_store", &self.integrations_store),
        ] {
            if !(url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::invalid(key, "must be empty or a postgres:// URL"));
            }
        }
        self.console.validate()?;
        let prefix_ok = !self.amqp.topology_prefix.is_empty()
            && self.amqp.topology_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !prefix_ok {
            return Err(ConfigError::invalid("amqp.topology_prefix", "use letters, digits, '.', '_' or '-'"));
        }
        let s = Duration::from_secs;
        let (a, i, d) = (&self.amqp, &self.ingest, &self.deliver);
        in_range("amqp.publish_channels", a.publish_channels as u64, 1, 64)?;
        within("amqp.publish_timeout", a.publish_timeout, Duration::from_millis(100), s(600))?;
        in_range("amqp.quorum_replicas", a.quorum_replicas.into(), 1, 9)?;
        in_range("ingest.max_body_bytes", i.max_body_bytes as u64, 1, 64 << 20)?;
        in_range("ingest.spool_max_bytes", i.spool_max_bytes, 1, 1 << 40)?;
        in_range("ingest.workers", i.workers as u64, 0, 256)?;
        within("ingest.drain_on_stop", i.drain_on_stop, s(0), s(3600))?;
        within("deliver.batch_linger", d.batch_linger, s(0), s(60))?;
        in_range("deliver.concurrency", d.concurrency as u64, 1, 1024)?;
        in_range("deliver.prefetch_bytes", d.prefetch_bytes, 1 << 20, 16 << 30)?;
        within("deliver.retry_for", d.retry_for, s(1), s(30 * DAY))?;
        within("deliver.ledger_keep", d.ledger_keep, d.retry_for, s(3650 * DAY))?;
        within("deliver.journey_keep", d.journey_keep, s(0), s(3650 * DAY))?;
        within("deliver.journey_lost_after", d.journey_lost_after, s(60), s(30 * DAY))?;
        within("deliver.pause_initial", d.pause_initial, s(1), s(DAY))?;
        within("deliver.pause_max", d.pause_max, d.pause_initial, s(7 * DAY))?;
        within("deliver.park_for", d.park_for, s(10), s(30 * DAY))?;
        // Within a claim's life (deliver's ledger: 90 s) with room to renew it.
        within("deliver.comagic_timeout", d.comagic_timeout, Duration::from_millis(100), s(60))?;
        within("deliver.doubt_margin", d.doubt_margin, s(0), s(DAY))?;
        within("postgres_timeout", self.postgres_timeout, Duration::from_millis(500), s(60))?;
        if !is_http(&self.ingest.public_url) {
            return Err(ConfigError::invalid("ingest.public_url", "must be an http:// or https:// URL"));
        }
        if !(1..=50).contains(&self.deliver.batch_max) {
            return Err(ConfigError::invalid(
                "deliver.batch_max",
                "must be between 1 and 50 (CoMagic's cap per request)",
            ));
        }
        if self.deliver.prefetch == 0 {
            return Err(ConfigError::invalid("deliver.prefetch", "must be at least 1"));
        }
        Ok(())
    }
}

const DAY: u64 = 86_400;

/// `postgres_timeout`'s default: how long one PostgreSQL operation may take.
pub const DEFAULT_POSTGRES_TIMEOUT: Duration = Duration::from_secs(5);

fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

fn in_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, format!("{value} is out of range: use {min} to {max}")))
    }
}

fn within(key: &str, value: Duration, min: Duration, max: Duration) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        let show = |d: Duration| format_duration(d);
        Err(ConfigError::invalid(key, format!("{} is out of range: use {} to {}", show(value), show(min), show(max))))
    }
}

mod console;
mod layers;
mod renamed;
mod values;

pub use console::ConsoleSettings;

use layers::apply_env_overrides;
pub use layers::deserialize_naming_key;
pub(crate) use layers::syntax_message;
use values::{address_list, duration_text};
pub use values::{format_duration, parse_duration};

#[cfg(test)]
mod tests;
