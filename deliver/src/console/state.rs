//! Each integration's state as the deliver replicas report it on their metrics pages: paused and
//! why (with the fix), CoMagic quota left, events per minute, the last delivery; and its dead
//! letters, counted from the dead-letter queue; and, from every ingest and deliver process's page,
//! which version of each integration it runs ([`super::applied`]). Sampled in the background, so
//! the table costs the replicas and the broker nothing per page view.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bridge_shared::comagic::mnemonics::fix_for;
use bridge_shared::lifecycle::Shutdown;
use bridge_shared::settings::AmqpSettings;
use serde_json::{json, Value};

use super::applied::{self, Process, Versions};
use crate::dlq::{self, Format, Selection};

/// How often the replicas' metrics are read, and how often the dead-letter queue is counted (a
/// scan of every letter: rarer).
const METRICS_EVERY: Duration = Duration::from_secs(2);
const DEAD_LETTERS_EVERY: Duration = Duration::from_secs(30);
/// Events per minute are measured over this much history.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// One reading of every replica's metrics, summed per integration.
#[derive(Default, Clone)]
struct Reading {
    delivered: HashMap<String, f64>,
    last_delivery: HashMap<String, f64>,
    paused: HashMap<String, String>,
    /// (integration, window) → points left; the lowest any replica reports.
    quota: HashMap<(String, String), f64>,
    pages_read: usize,
}

/// One sample line of a Prometheus text page: name, labels, value.
fn sample(line: &str) -> Option<(&str, HashMap<&str, &str>, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let labels = labels
        .split("\",")
        .filter_map(|pair| {
            let (k, v) = pair.split_once("=\"")?;
            Some((k, v.trim_end_matches('"')))
        })
        .collect();
    Some((name, labels, value))
}

impl Reading {
    fn add_page(&mut self, page: &str) {
        self.pages_read += 1;
        for (name, labels, value) in page.lines().filter(|l| !l.starts_with('#')).filter_map(sample) {
            let Some(integration) = labels.get("integration").map(|i| i.to_string()) else { continue };
            match name {
                "bridge_integration_delivered_total" => *self.delivered.entry(integration).or_default() += value,
                "bridge_integration_last_delivery_timestamp_seconds" => {
                    let last = self.last_delivery.entry(integration).or_default();
                    *last = last.max(value);
                }
                "bridge_integration_paused" if value > 0.0 => {
                    self.paused.insert(integration, labels.get("reason").unwrap_or(&"").to_string());
                }
                "bridge_comagic_quota_remaining" => {
                    let window = labels.get("window").unwrap_or(&"").to_string();
                    let left = self.quota.entry((integration, window)).or_insert(value);
                    *left = left.min(value);
                }
                _ => {}
            }
        }
    }
}

#[derive(Default)]
pub struct Sampler {
    readings: Mutex<VecDeque<(Instant, Reading)>>,
    /// Every process's page as last read, deliver's then ingest's.
    processes: Mutex<Vec<Process>>,
    dead_letters: Mutex<Option<HashMap<String, u64>>>,
    /// Held by every scan of the dead-letter queue this console makes: a scan holds the letters it
    /// read unacknowledged until it ends, and a replay or purge running beside it would not see them.
    scanning: tokio::sync::Mutex<()>,
}

/// How long a scan of the dead-letter queue waits for the console's other one, and how long it
/// may take itself: a broker that stops answering mid-scan must not hold the lock (and every other
/// scan) for ever. A scan given up on lets go of its connection, and the broker puts back what
/// it held; a replay cut short is taken up again by the next (a letter replayed twice is
/// harmless: the ledger and CoMagic's `ext_id` ignore the repeat).
const SCAN_WAIT: Duration = Duration::from_secs(30);
const SCAN_FOR: Duration = Duration::from_secs(120);

/// Why a scan did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("another scan of the dead-letter queue is still running: try again in a moment")]
    Busy,
    #[error("the dead-letter queue did not answer within {} s", SCAN_FOR.as_secs())]
    TimedOut,
    #[error("the dead-letter queue: {0}")]
    Failed(#[from] dlq::DlqError),
}

impl Sampler {
    /// Runs `scan` of the dead-letter queue once the console's other scan has ended, within
    /// [`SCAN_FOR`].
    pub async fn scan_alone<T>(
        &self,
        scan: impl std::future::Future<Output = Result<T, dlq::DlqError>>,
    ) -> Result<T, ScanError> {
        let _alone = tokio::time::timeout(SCAN_WAIT, self.scanning.lock()).await.map_err(|_| ScanError::Busy)?;
        Ok(tokio::time::timeout(SCAN_FOR, scan).await.map_err(|_| ScanError::TimedOut)??)
    }

    /// Reads the deliver and ingest `pages` every [`METRICS_EVERY`] and, on a task of its own (a
    /// slow scan must not stop the pages being read), counts dead letters every
    /// [`DEAD_LETTERS_EVERY`], until `stop`.
    pub async fn run(self: std::sync::Arc<Self>, pages: Pages, amqp: AmqpSettings, stop: Shutdown) {
        tokio::spawn(self.clone().count_dead_letters(amqp, stop.clone()));
        let http = reqwest::Client::builder().timeout(METRICS_EVERY).build().expect("an HTTP client builds");
        // Every page at once: a page that does not answer costs its deadline, not one per page.
        let read_all = |pages: Vec<String>| {
            let http = &http;
            futures_util::future::join_all(pages.into_iter().map(|page| async move {
                let text = read(http, &page).await;
                (page, text)
            }))
        };
        loop {
            let mut reading = Reading::default();
            let mut processes = Vec::new();
            for (page, text) in read_all(expand(&pages.deliver).await).await {
                if let Some(text) = &text {
                    reading.add_page(text);
                }
                processes.push(Process { page, seen: text.as_deref().map(versions) });
            }
            for (page, text) in read_all(expand(&pages.ingest).await).await {
                processes.push(Process { page, seen: text.as_deref().map(versions) });
            }
            self.keep(reading);
            *self.processes.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = processes;
            tokio::select! {
                _ = tokio::time::sleep(METRICS_EVERY) => {}
                _ = stop.stopped() => return,
            }
        }
    }

    /// Counts dead letters per integration every [`DEAD_LETTERS_EVERY`] until `stop`; a count that
    /// fails or takes too long shows as unknown.
    async fn count_dead_letters(self: std::sync::Arc<Self>, amqp: AmqpSettings, stop: Shutdown) {
        loop {
            let counts = self.scan_alone(dlq::stats(&amqp, &Selection::default(), Format::Json)).await;
            let counts = counts.ok().and_then(|stats| dead_letters(&stats));
            *self.dead_letters.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = counts;
            tokio::select! {
                _ = tokio::time::sleep(DEAD_LETTERS_EVERY) => {}
                _ = stop.stopped() => return,
            }
        }
    }

    fn keep(&self, reading: Reading) {
        let mut readings = self.readings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        readings.push_back((Instant::now(), reading));
        while readings.front().is_some_and(|(at, _)| at.elapsed() > RATE_WINDOW) {
            readings.pop_front();
        }
    }

    /// Whether every process read runs `version` of `integration` ([`applied::applied`]).
    pub fn applied_of(&self, integration: &str, version: &str, to_tenant: bool) -> Value {
        let processes = self.processes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        applied::applied(&processes, integration, version, to_tenant)
    }

    /// The state of `integration` as last read.
    pub fn state_of(&self, integration: &str) -> Value {
        let readings = self.readings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((latest_at, latest)) = readings.back() else {
            return json!({"known": false});
        };
        let per_minute = readings.front().filter(|(at, _)| latest_at.duration_since(*at) >= METRICS_EVERY * 5).map(
            |(at, oldest)| {
                let delta = latest.delivered.get(integration).copied().unwrap_or(0.0)
                    - oldest.delivered.get(integration).copied().unwrap_or(0.0);
                (delta.max(0.0) * 60.0 / latest_at.duration_since(*at).as_secs_f64()).round()
            },
        );
        let paused = latest.paused.get(integration);
        let quota: HashMap<&str, f64> = latest
            .quota
            .iter()
            .filter(|((i, _), _)| i == integration)
            .map(|((_, window), left)| (window.as_str(), *left))
            .collect();
        let last = latest
            .last_delivery
            .get(integration)
            .and_then(|t| chrono::DateTime::from_timestamp(*t as i64, 0))
            .map(|t| t.to_rfc3339());
        let dead = self
            .dead_letters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|counts| counts.get(integration).copied().unwrap_or(0));
        json!({
            "known": latest.pages_read > 0,
            "paused": paused.is_some(),
            "paused_reason": paused,
            "fix": paused.and_then(|reason| fix_for(reason)),
            "quota_remaining": quota,
            "delivered": latest.delivered.get(integration).copied().unwrap_or(0.0),
            "events_per_minute": per_minute,
            "last_delivery": last,
            "dead_letters": dead,
        })
    }
}

/// The metrics pages the sampler reads: `[console] deliver_metrics` and `ingest_metrics`.
pub struct Pages {
    pub deliver: Vec<String>,
    pub ingest: Vec<String>,
}

/// A page's text; `None` when it does not answer, or answers an error.
async fn read(http: &reqwest::Client, page: &str) -> Option<String> {
    let read = async { http.get(page).send().await?.error_for_status()?.text().await };
    (read.await as Result<String, reqwest::Error>).ok()
}

/// The integration versions a page reports.
fn versions(page: &str) -> Versions {
    let mut versions = Versions::default();
    for (name, labels, value) in page.lines().filter(|l| !l.starts_with('#')).filter_map(sample) {
        versions.add(name, &labels, value);
    }
    versions
}

/// The pages to read: a `dns+http://host:port/path` page is one page per address `host` resolves
/// to (in Kubernetes, a headless Service's name gives every deliver pod).
async fn expand(pages: &[String]) -> Vec<String> {
    let mut expanded = Vec::new();
    for page in pages {
        let Some((scheme, rest)) = page.strip_prefix("dns+").and_then(|p| p.split_once("://")) else {
            expanded.push(page.clone());
            continue;
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        // A resolver that does not answer is a page that does not answer, not a stopped sampler.
        let resolved = tokio::time::timeout(METRICS_EVERY, tokio::net::lookup_host(authority))
            .await
            .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer")));
        match resolved {
            Ok(addresses) => expanded.extend(addresses.map(|a| format!("{scheme}://{a}/{path}"))),
            Err(error) => {
                tracing::warn!(%error, host = authority, "cannot resolve the replicas' name");
                // Read as a page that does not answer: its processes count as unknown.
                expanded.push(page.clone());
            }
        }
    }
    expanded
}

/// Dead letters per integration, from `deliver dlq stats --json`'s text.
fn dead_letters(stats: &str) -> Option<HashMap<String, u64>> {
    let stats: Value = serde_json::from_str(stats).ok()?;
    let mut counts = HashMap::new();
    for group in stats.get("groups")?.as_array()? {
        let integration = group.get("integration")?.as_str()?.to_owned();
        *counts.entry(integration).or_default() += group.get("count")?.as_u64()?;
    }
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_two_replicas_sums_deliveries_and_keeps_the_lowest_quota() {
        let mut reading = Reading::default();
        reading.add_page(
            "# HELP x\nbridge_integration_delivered_total{integration=\"acme\"} 5\n\
             bridge_comagic_quota_remaining{integration=\"acme\",window=\"minute\"} 90\n\
             bridge_integration_paused{integration=\"acme\",reason=\"ip_not_whitelisted\"} 1\n\
             bridge_integration_paused{integration=\"beta\",reason=\"access_token_expired\"} 0\n",
        );
        reading.add_page(
            "bridge_integration_delivered_total{integration=\"acme\"} 7\n\
             bridge_comagic_quota_remaining{integration=\"acme\",window=\"minute\"} 80\n",
        );
        assert_eq!(reading.delivered["acme"], 12.0);
        assert_eq!(reading.quota[&("acme".into(), "minute".into())], 80.0);
        assert_eq!(reading.paused.get("acme").map(String::as_str), Some("ip_not_whitelisted"));
        assert!(!reading.paused.contains_key("beta"), "a pause that ended is a 0");
    }
}
