//! `bridge.toml`: typed settings layered from the file, then `BRIDGE__<SECTION>__<KEY>` variables.
//! Every key has a default; an invalid one stops the process with one line naming it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub ingest: IngestSettings,
    pub deliver: DeliverSettings,
    /// The tenants' integrations; relative paths are resolved beside `bridge.toml`.
    pub integrations: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpSettings {
    pub url: String,
    /// Prefix of every exchange and queue name (`bridge` gives `bridge.events`, ...). Tests use a
    /// unique prefix each so they run in parallel on one broker.
    pub topology_prefix: String,
    /// Publisher-confirm channels kept open by ingest.
    pub publish_channels: usize,
    pub publish_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    pub listen: SocketAddr,
    pub public_url: String,
    pub spool_dir: PathBuf,
    pub max_body_bytes: usize,
    /// Events the spool holds at most; past it, webhooks get 503 while the broker is down.
    pub spool_max_events: usize,
    /// actix workers; 0 = one per core.
    pub workers: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverSettings {
    pub listen: SocketAddr,
    pub prefetch: u16,
    pub batch_max: usize,
    pub batch_linger_ms: u64,
    pub ledger_dir: PathBuf,
    /// How long a delivered ext_id stays in the ledger, e.g. `7d`. Redeliveries come within
    /// `retry_for`; after that CoMagic's own `duplicate_entity` still stops a repeat.
    pub ledger_keep: String,
    /// How long transient failures are retried before an event is dead-lettered, e.g. `24h`.
    pub retry_for: String,
    /// CoMagic requests in flight at once, over all tenants.
    pub concurrency: usize,
    /// The first pause of an integration whose account refuses us (doubles up to `pause_max`).
    pub pause_initial: String,
    pub pause_max: String,
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
    /// What a binary needs to keep its broker session (`name` shows in the management UI).
    pub fn session(&self, topology: crate::amqp::Topology, name: &'static str) -> crate::amqp::session::SessionConfig {
        crate::amqp::session::SessionConfig {
            url: self.url.clone(),
            topology,
            channels: self.publish_channels,
            publish_timeout: std::time::Duration::from_millis(self.publish_timeout_ms),
            connection_name: name,
        }
    }
}

impl Default for AmqpSettings {
    fn default() -> Self {
        AmqpSettings {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
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
            spool_max_events: 1_000_000,
            workers: 0,
        }
    }
}

impl Default for DeliverSettings {
    fn default() -> Self {
        DeliverSettings {
            listen: "0.0.0.0:9091".parse().expect("literal address"),
            prefetch: 2000,
            batch_max: 50,
            batch_linger_ms: 200,
            ledger_dir: PathBuf::from("var/ledger"),
            ledger_keep: "7d".into(),
            retry_for: "24h".into(),
            concurrency: 16,
            pause_initial: "5m".into(),
            pause_max: "1h".into(),
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
            message: e.message().to_owned(),
        })?;
        apply_env_overrides(&mut table, env)?;
        let settings: Settings = deserialize_naming_key(toml::Value::Table(table))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.amqp.url.starts_with("amqp://") || self.amqp.url.starts_with("amqps://")) {
            return Err(ConfigError::invalid("amqp.url", "must start with amqp:// or amqps://"));
        }
        let prefix_ok = !self.amqp.topology_prefix.is_empty()
            && self.amqp.topology_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !prefix_ok {
            return Err(ConfigError::invalid("amqp.topology_prefix", "use letters, digits, '.', '_' or '-'"));
        }
        if self.amqp.publish_channels == 0 {
            return Err(ConfigError::invalid("amqp.publish_channels", "must be at least 1"));
        }
        if !(self.ingest.public_url.starts_with("http://") || self.ingest.public_url.starts_with("https://")) {
            return Err(ConfigError::invalid("ingest.public_url", "must be an http:// or https:// URL"));
        }
        if self.ingest.max_body_bytes == 0 {
            return Err(ConfigError::invalid("ingest.max_body_bytes", "must be positive"));
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
        if self.deliver.concurrency == 0 {
            return Err(ConfigError::invalid("deliver.concurrency", "must be at least 1"));
        }
        for (key, value) in [
            ("deliver.retry_for", &self.deliver.retry_for),
            ("deliver.ledger_keep", &self.deliver.ledger_keep),
            ("deliver.pause_initial", &self.deliver.pause_initial),
            ("deliver.pause_max", &self.deliver.pause_max),
        ] {
            parse_duration(value).map_err(|m| ConfigError::invalid(key, m))?;
        }
        Ok(())
    }

    pub fn retry_for(&self) -> Duration {
        parse_duration(&self.deliver.retry_for).expect("validated at load")
    }

    pub fn ledger_keep(&self) -> Duration {
        parse_duration(&self.deliver.ledger_keep).expect("validated at load")
    }

    /// The first and the longest pause of a misconfigured integration.
    pub fn pause_range(&self) -> (Duration, Duration) {
        let parse = |s: &str| parse_duration(s).expect("validated at load");
        (parse(&self.deliver.pause_initial), parse(&self.deliver.pause_max))
    }
}

/// Deserializes, and on failure names the dotted key that was wrong (`ingest.listen: ...`).
pub(crate) fn deserialize_naming_key<T: serde::de::DeserializeOwned>(value: toml::Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let message = e.into_inner().message().to_owned();
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

/// `500ms`, `10s`, `5m`, `24h`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("`{s}` is not a duration like 10s, 5m or 24h"))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("`{s}` is not a duration like 10s, 5m or 24h")),
    };
    Ok(Duration::from_secs(seconds))
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
        assert_eq!(s.retry_for(), Duration::from_secs(86_400));
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
    }
}
