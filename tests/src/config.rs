//! `bridge.toml` as tests and benchmarks write it, and the reading of a `/metrics` page: one
//! place each, so a renamed key or metric format breaks one helper, not every test binary.

use std::path::{Path, PathBuf};

/// One test's (or benchmark run's) `bridge.toml`: its broker and topology prefix, spool and ledger
/// in its own directory, ports chosen by the OS, and extra lines per section.
pub struct BridgeToml {
    /// One address is written as `url`, several as `urls`.
    pub amqp_urls: Vec<String>,
    pub prefix: String,
    pub ingest_listen: String,
    pub ingest_metrics_listen: String,
    pub deliver_listen: String,
    pub amqp: String,
    pub ingest: String,
    pub deliver: String,
    pub console: String,
}

impl BridgeToml {
    pub fn new(amqp_url: &str, prefix: &str) -> Self {
        BridgeToml {
            amqp_urls: vec![amqp_url.to_owned()],
            prefix: prefix.to_owned(),
            ingest_listen: "127.0.0.1:0".into(),
            ingest_metrics_listen: "127.0.0.1:0".into(),
            deliver_listen: "127.0.0.1:0".into(),
            amqp: String::new(),
            ingest: String::new(),
            deliver: String::new(),
            console: String::new(),
        }
    }

    /// Writes `dir/bridge.toml` (naming `dir/integrations.toml`); returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let broker = match self.amqp_urls.as_slice() {
            [one] => format!("url = \"{one}\""),
            many => format!("urls = [{}]", many.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ")),
        };
        let path = dir.join("bridge.toml");
        let text = format!(
            "integrations = \"integrations.toml\"\n\
             [amqp]\n{broker}\ntopology_prefix = \"{}\"\n{}\n\
             [ingest]\nlisten = \"{}\"\nmetrics_listen = \"{}\"\nspool_dir = \"{}\"\n{}\n\
             [deliver]\nlisten = \"{}\"\nledger_dir = \"{}\"\n{}\n\
             [console]\n{}\n",
            self.prefix,
            self.amqp,
            self.ingest_listen,
            self.ingest_metrics_listen,
            dir.join("spool").display(),
            self.ingest,
            self.deliver_listen,
            dir.join("ledger").display(),
            self.deliver,
            self.console,
        );
        std::fs::write(&path, text).expect("bridge.toml written");
        path
    }
}

/// The value of one sample of a Prometheus text page (`name{labels}` as written), 0 when absent.
pub fn metric_sample(page: &str, sample: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().expect("a sample's value is a number"))
}

/// A webhook URL of ingest at `address`.
pub fn webhook_url(address: &str, integration: &str, kind: &str, token: &str) -> String {
    format!("{address}/v1/verbox/{integration}/{kind}/{token}")
}
