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
    /// The tenants' integrations; relative paths are resolved beside `bridge.toml`.
    pub integrations: PathBuf,
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
    pub publish_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    pub listen: SocketAddr,
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
    /// Bytes of event messages deliver may hold unacked: half for small events (up to
    /// `prefetch` of them), half for large ones (as many as fit at `[ingest] max_body_bytes`).
    pub prefetch_bytes: u64,
    pub batch_max: usize,
    pub batch_linger_ms: u64,
    pub ledger_dir: PathBuf,
    /// The ledger several deliver replicas share (`postgres://user:password@host/db`); empty keeps
    /// the single-process ledger in `ledger_dir`. Required when more than one deliver runs.
    pub ledger_postgres: String,
    /// How long a delivered ext_id stays in the ledger, e.g. `7d`; at least `retry_for`, within
    /// which redeliveries come. After that CoMagic's own `duplicate_entity` still stops a repeat.
    #[serde(with = "duration_text")]
    pub ledger_keep: Duration,
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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            amqp: AmqpSettings::default(),
            ingest: IngestSettings::default(),
            deliver: DeliverSettings::default(),
            integrations: PathBuf::from("integrations.toml"),
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
            publish_timeout: std::time::Duration::from_millis(self.publish_timeout_ms),
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
            publish_timeout_ms: 5_000,
        }
    }
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            listen: "0.0.0.0:8080".parse().expect("literal address"),
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
            prefetch_bytes: 48 << 20,
            batch_max: 50,
            batch_linger_ms: 200,
            ledger_dir: PathBuf::from("var/ledger"),
            ledger_postgres: String::new(),
            ledger_keep: Duration::from_secs(7 * DAY),
            retry_for: Duration::from_secs(DAY),
            concurrency: 16,
            pause_initial: Duration::from_secs(300),
            pause_max: Duration::from_secs(3600),
            park_for: Duration::from_secs(7 * DAY),
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
        let postgres = &self.deliver.ledger_postgres;
        if !(postgres.is_empty() || postgres.starts_with("postgres://") || postgres.starts_with("postgresql://")) {
            return Err(ConfigError::invalid("deliver.ledger_postgres", "must be empty or a postgres:// URL"));
        }
        let prefix_ok = !self.amqp.topology_prefix.is_empty()
            && self.amqp.topology_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !prefix_ok {
            return Err(ConfigError::invalid("amqp.topology_prefix", "use letters, digits, '.', '_' or '-'"));
        }
        let s = Duration::from_secs;
        let (a, i, d) = (&self.amqp, &self.ingest, &self.deliver);
        in_range("amqp.publish_channels", a.publish_channels as u64, 1, 64)?;
        in_range("amqp.publish_timeout_ms", a.publish_timeout_ms, 100, 600_000)?;
        in_range("amqp.quorum_replicas", a.quorum_replicas.into(), 1, 9)?;
        in_range("ingest.max_body_bytes", i.max_body_bytes as u64, 1, 64 << 20)?;
        in_range("ingest.spool_max_bytes", i.spool_max_bytes, 1, 1 << 40)?;
        in_range("ingest.workers", i.workers as u64, 0, 256)?;
        within("ingest.drain_on_stop", i.drain_on_stop, s(0), s(3600))?;
        in_range("deliver.batch_linger_ms", d.batch_linger_ms, 0, 60_000)?;
        in_range("deliver.concurrency", d.concurrency as u64, 1, 1024)?;
        in_range("deliver.prefetch_bytes", d.prefetch_bytes, 1 << 20, 16 << 30)?;
        within("deliver.retry_for", d.retry_for, s(1), s(30 * DAY))?;
        within("deliver.ledger_keep", d.ledger_keep, d.retry_for, s(3650 * DAY))?;
        within("deliver.pause_initial", d.pause_initial, s(1), s(DAY))?;
        within("deliver.pause_max", d.pause_max, d.pause_initial, s(7 * DAY))?;
        within("deliver.park_for", d.park_for, s(10), s(30 * DAY))?;
        if !(self.ingest.public_url.starts_with("http://") || self.ingest.public_url.starts_with("https://")) {
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

/// A duration in the form the settings take: the largest unit that divides it exactly (`90m`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms >= per && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// A duration key in its text form (`10s`, `5m`, `24h`, `7d`).
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// A TOML syntax error as a line number and what is wrong, never the text of the line: the line
/// may hold a token (a missing quote after `comagic_token = "…`), and the error goes to the log.
pub(crate) fn syntax_message(error: &toml::de::Error, text: &str) -> String {
    let line = error.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let what = hide_values(error.message().trim());
    match line {
        Some(line) => format!("line {line}: {what}"),
        None => what,
    }
}

/// A deserializer's message with every quoted value replaced by `"…"`: `invalid type: string
/// "<a token pasted under the wrong key>", expected u64` must not reach a log line.
fn hide_values(message: &str) -> String {
    let parts: Vec<&str> =
        message.split('"').enumerate().map(|(i, part)| if i % 2 == 1 { "…" } else { part }).collect();
    parts.join("\"")
}

/// Deserializes, and on failure names the dotted key that was wrong (`ingest.listen: ...`).
pub(crate) fn deserialize_naming_key<T: serde::de::DeserializeOwned>(value: toml::Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let message = hide_values(e.into_inner().message());
        if key == "." {
            ConfigError::Syntax { path: String::new(), message }
        } else {
            ConfigError::invalid(key, message)
        }
    })
}

/// `BRIDGE__AMQP__URL=...` sets `[amqp] url`. A value that parses as a TOML literal (number, bool)
/// is taken as one, anything else as a string.
fn apply_env_overrides(table: &mut toml::Table, env: &HashMap<String, String>) -> Result<(), ConfigError> {
    let mut keys: Vec<_> = env.keys().filter(|k| k.starts_with("BRIDGE__")).collect();
    keys.sort();
    for name in keys {
        let raw = &env[name];
        let path: Vec<String> = name["BRIDGE__".len()..].split("__").map(str::to_lowercase).collect();
        let key = path.join(".");
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(name.clone(), "malformed variable name"));
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let (last, sections) = path.split_last().expect("at least one segment");
        let mut node = &mut *table;
        for section in sections {
            node = node
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| ConfigError::invalid(key.clone(), "is not a section"))?;
        }
        node.insert(last.clone(), value);
    }
    Ok(())
}

/// `[amqp] urls`: a TOML list, or one string of comma-separated addresses (what an environment
/// variable or a Kubernetes Secret holds).
mod address_list {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let list = match Form::deserialize(d)? {
            Form::List(list) => list,
            Form::Text(text) => text.split(',').map(str::to_owned).collect(),
        };
        Ok(list.into_iter().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect())
    }

    pub fn serialize<S: Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(urls)
    }
}

/// `500ms`, `10s`, `5m`, `24h`, `2d`; at most ten years, whatever the unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const LONGEST: u64 = 3650 * DAY;
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let not_a_duration = || format!("`{s}` is not a duration like 10s, 5m or 24h");
    let n: u64 = number.parse().map_err(|_| not_a_duration())?;
    let duration = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        "d" => n.checked_mul(DAY).map(Duration::from_secs),
        _ => return Err(not_a_duration()),
    };
    duration.filter(|d| d.as_secs() <= LONGEST).ok_or_else(|| format!("`{s}` is longer than ten years"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn empty_file_gives_the_contract_defaults() {
        let s = Settings::from_toml("", &env(&[])).unwrap();
        assert_eq!(s.amqp.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(s.ingest.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(s.ingest.max_body_bytes, 1 << 20);
        assert_eq!(s.deliver.listen.to_string(), "0.0.0.0:9091");
        assert_eq!(s.deliver.batch_max, 50);
        assert_eq!(s.deliver.retry_for, Duration::from_secs(86_400));
        assert_eq!(s.deliver.park_for, Duration::from_secs(7 * 86_400));
        assert_eq!(s.integrations, PathBuf::from("integrations.toml"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let s = Settings::from_toml(
            "[amqp]\nurl = \"amqp://file\"\n[deliver]\nprefetch = 10\n",
            &env(&[("BRIDGE__AMQP__URL", "amqp://env"), ("BRIDGE__DELIVER__BATCH_MAX", "20"), ("OTHER", "x")]),
        )
        .unwrap();
        assert_eq!(s.amqp.url, "amqp://env");
        assert_eq!(s.deliver.batch_max, 20);
        assert_eq!(s.deliver.prefetch, 10);
    }

    #[test]
    fn the_broker_is_one_url_or_a_list_of_nodes_from_the_file_or_the_environment() {
        let s = Settings::from_toml("[amqp]\nurl = \"amqp://one\"", &env(&[])).unwrap();
        assert_eq!(s.amqp.nodes(), vec!["amqp://one"]);
        let s = Settings::from_toml("[amqp]\nurls = [\"amqp://a\", \"amqps://b\"]", &env(&[])).unwrap();
        assert_eq!(s.amqp.nodes(), vec!["amqp://a", "amqps://b"]);
        let s = Settings::from_toml("", &env(&[("BRIDGE__AMQP__URLS", "amqp://u:p@a, amqp://u:p@b,")])).unwrap();
        assert_eq!(s.amqp.nodes(), vec!["amqp://u:p@a", "amqp://u:p@b"]);
        let e = Settings::from_toml("[amqp]\nurls = [\"amqp://a\", \"http://secret@b\"]", &env(&[])).unwrap_err();
        assert!(e.to_string().starts_with("amqp.urls[1]:"), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn errors_name_the_bad_key() {
        let err = |toml: &str, e: &[(&str, &str)]| Settings::from_toml(toml, &env(e)).unwrap_err().to_string();
        assert!(err("[deliver]\nbatch_max = 51", &[]).starts_with("deliver.batch_max:"));
        assert!(err("", &[("BRIDGE__DELIVER__BATCH_MAX", "0")]).starts_with("deliver.batch_max:"));
        assert!(err("[deliver]\nretry_for = \"forever\"", &[]).starts_with("deliver.retry_for:"));
        assert!(err("[amqp]\nurl = \"http://x\"", &[]).starts_with("amqp.url:"));
        assert!(err("[ingest]\nlisten = \"nowhere\"", &[]).starts_with("ingest.listen:"));
        assert!(err("[deliver]\nprefetch = \"many\"", &[]).starts_with("deliver.prefetch:"));
        assert!(err("[amqp]\nuri = \"amqp://x\"", &[]).contains("uri"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999d").is_err(), "no overflow");
        assert!(parse_duration("3651d").is_err());
        assert_eq!(format_duration(Duration::from_secs(5400)), "90m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    /// Every key `bridge.toml` takes, as `section.key`, from the defaults written back as TOML.
    fn every_key() -> Vec<String> {
        let defaults = toml::Table::try_from(Settings::default()).expect("the defaults serialize");
        let mut keys = Vec::new();
        for (name, value) in defaults {
            match value {
                toml::Value::Table(section) => keys.extend(section.keys().map(|k| format!("{name}.{k}"))),
                _ => keys.push(name),
            }
        }
        keys
    }

    #[test]
    fn every_key_is_documented_with_its_default_in_the_readme() {
        let readme = include_str!("../../README.md");
        let keys = every_key();
        assert!(keys.len() >= 20, "{keys:?}");
        for key in keys {
            let shown = match key.split_once('.') {
                Some((section, name)) => format!("| `[{section}] {name}` |"),
                None => format!("| `{key}` |"),
            };
            assert!(readme.contains(&shown), "README's settings table lacks a row starting {shown}");
        }
    }

    #[test]
    fn every_duration_size_and_count_is_range_checked_naming_its_key() {
        let cases = [
            "[amqp]\npublish_channels = 0",
            "[amqp]\npublish_timeout_ms = 99999999999",
            "[ingest]\nmax_body_bytes = 0",
            "[ingest]\nspool_max_bytes = 0",
            "[ingest]\nworkers = 100000",
            "[deliver]\nbatch_linger_ms = 86400000",
            "[deliver]\nconcurrency = 0",
            "[deliver]\nretry_for = \"0s\"",
            "[deliver]\nretry_for = \"90d\"",
            "[deliver]\nledger_keep = \"1h\"",
            "[deliver]\npause_initial = \"500ms\"",
            "[deliver]\npause_max = \"1s\"",
            "[deliver]\npark_for = \"9s\"",
            "[deliver]\nledger_keep = \"99999999999999d\"",
        ];
        for toml in cases {
            let key = {
                let (section, rest) = toml.trim_start_matches('[').split_once("]\n").unwrap();
                format!("{section}.{}", rest.split(" =").next().unwrap())
            };
            let error = Settings::from_toml(toml, &env(&[])).unwrap_err().to_string();
            assert!(error.starts_with(&format!("{key}:")), "{toml} gave {error}");
        }
    }
}
