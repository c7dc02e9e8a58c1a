//! `[console]`: where `deliver console` listens, what it reads, and the two limits that keep an
//! admin of the console from turning it against its host: the CoMagic addresses a form may name
//! (a stored token is sent only there) and the environment variables a form's `*_env` may name
//! (the console's own environment holds its admin tokens and database URLs).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{is_http, ConfigError, DeliverSettings, IngestSettings};

/// `deliver console`: the admin API and the settings console. Its admin tokens come from the
/// environment only (`BRIDGE_ADMIN_TOKENS`, comma-separated), never from a file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// Its own port, never ingest's public one: keep it on an internal network.
    pub listen: SocketAddr,
    /// The deliver replicas' `/metrics` pages it reads each integration's state from (paused,
    /// quota, deliveries). Empty: the local deliver at `[deliver] listen`.
    pub deliver_metrics: Vec<String>,
    /// The ingest replicas' `/metrics` pages: with deliver's, where it reads which version of each
    /// integration every process runs. Empty: the local ingest at `[ingest] metrics_listen`.
    pub ingest_metrics: Vec<String>,
    /// The CoMagic Data API addresses a saved form, an account look-up or a check may name besides
    /// CoMagic's and UIS's own (a sandbox, a proxy). Empty: those two only.
    pub comagic_endpoints: Vec<String>,
    /// The prefix every environment variable a form names (`comagic_token_env` and the like) must
    /// start with; the console resolves no other variable.
    pub secret_env_prefix: String,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            listen: "127.0.0.1:9093".parse().expect("literal address"),
            deliver_metrics: Vec::new(),
            ingest_metrics: Vec::new(),
            comagic_endpoints: Vec::new(),
            secret_env_prefix: "BRIDGE_SECRET_".to_owned(),
        }
    }
}

impl ConsoleSettings {
    /// The deliver metrics pages to read, the local deliver's when none is set.
    pub fn metrics_pages(&self, deliver: &DeliverSettings) -> Vec<String> {
        local_unless_set(&self.deliver_metrics, deliver.listen.port())
    }

    /// The ingest metrics pages to read, the local ingest's when none is set.
    pub fn ingest_pages(&self, ingest: &IngestSettings) -> Vec<String> {
        local_unless_set(&self.ingest_metrics, ingest.metrics_listen.port())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let page_ok = |u: &String| is_http(u.strip_prefix("dns+").unwrap_or(u));
        for (key, pages) in [("deliver_metrics", &self.deliver_metrics), ("ingest_metrics", &self.ingest_metrics)] {
            if let Some(i) = pages.iter().position(|u| !page_ok(u)) {
                return Err(ConfigError::invalid(
                    format!("console.{key}[{i}]"),
                    "must be an http(s) URL, or dns+http(s):// for every address a name resolves to",
                ));
            }
        }
        if let Some(i) = self.comagic_endpoints.iter().position(|u| !is_http(u)) {
            return Err(ConfigError::invalid(format!("console.comagic_endpoints[{i}]"), "must be an http(s) URL"));
        }
        // Short and plain: a prefix of a few letters (or none) would let a form name any variable.
        let prefix_ok = self.secret_env_prefix.len() >= 4
            && self.secret_env_prefix.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        // Nor one that covers the console's own variables (`BRIDGE_ADMIN_TOKENS`, and the
        // `BRIDGE__…` settings overrides that hold database URLs).
        let covers_own = ["BRIDGE_ADMIN_TOKENS", "BRIDGE__"].iter().any(|own| own.starts_with(&self.secret_env_prefix));
        if !prefix_ok || covers_own {
            return Err(ConfigError::invalid(
                "console.secret_env_prefix",
                "must be at least 4 characters of [A-Z0-9_], such as BRIDGE_SECRET_, covering neither BRIDGE_ADMIN_TOKENS nor BRIDGE__",
            ));
        }
        Ok(())
    }

    /// Whether a form may name the environment variable `name`.
    pub fn env_name_allowed(&self, name: &str) -> bool {
        name.len() > self.secret_env_prefix.len() && name.starts_with(&self.secret_env_prefix)
    }
}

fn local_unless_set(pages: &[String], local_port: u16) -> Vec<String> {
    if pages.is_empty() {
        vec![format!("http://127.0.0.1:{local_port}/metrics")]
    } else {
        pages.to_vec()
    }
}
