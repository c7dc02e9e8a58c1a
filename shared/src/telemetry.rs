//! Logging (JSON lines on stdout, `RUST_LOG` filter) and the Prometheus metrics (docs/metrics.md).
//! Label values are bounded: never a phone, e-mail, token or event id.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // A second init (tests start several services in one process) keeps the first subscriber.
    let _ = tracing_subscriber::fmt().json().with_current_span(false).with_env_filter(filter).try_init();
}

/// Operator commands print their results on stdout: their log lines go to stderr, warnings only
/// unless `RUST_LOG` says otherwise.
pub fn init_cli_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .try_init();
}

/// The content type of a `/metrics` page ([`render`]): Prometheus text format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The Prometheus text exposition of everything in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out).expect("text encoding cannot fail");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// `bridge_ingest_requests_total{outcome}` values.
pub const INGEST_OUTCOMES: [&str; 8] =
    ["accepted", "spooled", "ignored", "invalid", "unauthorized", "not_found", "too_large", "unavailable"];
/// `bridge_deliver_events_total{outcome}` values.
pub const DELIVER_OUTCOMES: [&str; 5] = ["delivered", "duplicate", "skipped", "retried", "dead_lettered"];
/// The `outcome` label of `bridge_deliver_in_doubt_total`.
pub const IN_DOUBT_OUTCOMES: [&str; 3] = ["found", "absent", "unverifiable"];

/// Creates a counter's series for every known label pair at 0. A series that first appears with
/// the value 1 has no increase Prometheus can see: `increase(...) > 0` would miss the first dead
/// letter, and a panel of a rate shows nothing until it happens.
fn at_zero(counter: &IntCounterVec, kinds: &[&str], outcomes: &[&str]) {
    for kind in kinds {
        for outcome in outcomes {
            counter.with_label_values(&[kind, outcome]).inc_by(0);
        }
    }
}

const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("registered once");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels).expect("valid metric");
    registry.register(Box::new(h.clone())).expect("registered once");
    h
}

fn single_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("registered once");
    g
}

/// `bridge_postgres_up{role}`: 1 while the database of that role (`ledger`, `integrations`)
/// answers within its deadline, 0 from the first statement that did not until one does (set by
/// the PostgreSQL connections' status).
pub fn postgres_up(registry: &Registry) -> IntGaugeVec {
    let help = "1 while the PostgreSQL database of the role answers within postgres_timeout";
    labelled_gauge(registry, "bridge_postgres_up", help, &["role"])
}

fn labelled_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("registered once");
    g
}

/// Recorded by the CoMagic client, whichever binary uses it.
#[derive(Debug, Clone)]
pub struct ComagicMetrics {
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub batch_items: HistogramVec,
}

impl ComagicMetrics {
    pub fn new(registry: &Registry) -> Self {
        ComagicMetrics {
            requests: counter(
                registry,
                "bridge_comagic_requests_total",
                "CoMagic Data API calls by method and result (ok, a mnemonic, transport)",
                &["method", "result"],
            ),
            request_duration: histogram(
                registry,
                "bridge_comagic_request_duration_seconds",
                "CoMagic Data API call latency",
                &["method"],
                LATENCY_BUCKETS,
            ),
            batch_items: histogram(
                registry,
                "bridge_comagic_batch_items",
                "Items per CoMagic upload call",
                &["method"],
                &[1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 45.0, 50.0],
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct IngestMetrics {
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub spool_events: IntGauge,
    pub spool_bytes: IntGauge,
    pub spool_errors: IntCounterVec,
    pub amqp: AmqpMetrics,
}

impl IngestMetrics {
    pub fn new(registry: &Registry) -> Self {
        let metrics = IngestMetrics {
            requests: counter(
                registry,
                "bridge_ingest_requests_total",
                "Webhooks received, by kind and outcome",
                &["kind", "outcome"],
            ),
            request_duration: histogram(
                registry,
                "bridge_ingest_request_duration_seconds",
                "Webhook answer latency",
                &["kind"],
                LATENCY_BUCKETS,
            ),
            spool_events: gauge(
                registry,
                "bridge_ingest_spool_events",
                "Events waiting in the local spool for the broker",
            ),
            spool_bytes: gauge(
                registry,
                "bridge_ingest_spool_bytes",
                "Bytes of events in the local spool (capped by [ingest] spool_max_bytes)",
            ),
            spool_errors: counter(
                registry,
                "bridge_ingest_spool_errors_total",
                "Spool entries that could not be read (quarantined) or removed after publishing, by reason",
                &["reason"],
            ),
            amqp: AmqpMetrics::new(registry),
        };
        let kinds = crate::event::EventKind::ALL.map(crate::event::EventKind::as_str);
        at_zero(&metrics.requests, &kinds, &INGEST_OUTCOMES);
        metrics
    }
}

/// The broker link's, the same in both binaries.
#[derive(Debug, Clone)]
pub struct AmqpMetrics {
    pub connected: IntGauge,
    pub connect_failures: IntCounter,
    pub node: IntGaugeVec,
}

impl AmqpMetrics {
    pub fn new(registry: &Registry) -> Self {
        let help = "1 for the broker node (host:port) the process is connected to";
        let node = labelled_gauge(registry, "bridge_amqp_node", help, &["node"]);
        AmqpMetrics {
            connected: gauge(registry, "bridge_amqp_connected", "1 while the broker connection is up"),
            connect_failures: single_counter(
                registry,
                "bridge_amqp_connect_failures_total",
                "Failed or timed-out attempts to connect to a broker node and declare the topology",
            ),
            node,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeliverMetrics {
    pub events: IntCounterVec,
    pub attribution: IntCounterVec,
    pub end_to_end: HistogramVec,
    /// The same, per integration: a stuck tenant shows here first.
    pub integration_end_to_end: HistogramVec,
    pub paused: IntGaugeVec,
    pub quota_remaining: IntGaugeVec,
    /// Per integration (one series each): what the console's table shows.
    pub integration_delivered: IntCounterVec,
    pub integration_last_delivery: IntGaugeVec,
    pub amqp: AmqpMetrics,
    pub redeliveries: IntCounterVec,
    /// Events asked about in CoMagic's report before sending, by what it said.
    pub in_doubt: IntCounterVec,
    pub panics: IntCounterVec,
    pub move_failures: IntCounter,
    /// `basic.ack` / `basic.nack` frames sent, by kind: with the events handled, how well acks
    /// coalesce.
    pub ack_frames: IntCounterVec,
}

impl DeliverMetrics {
    pub fn new(registry: &Registry) -> Self {
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let metrics = DeliverMetrics {
            events: counter(
                registry,
                "bridge_deliver_events_total",
                "Events handled by deliver, by kind and outcome",
                &["kind", "outcome"],
            ),
            attribution: counter(
                registry,
                "bridge_deliver_attribution_total",
                "Delivered events by the attribution rule that decided",
                &["kind", "rule"],
            ),
            end_to_end: histogram(
                registry,
                "bridge_deliver_end_to_end_seconds",
                "From ingest receiving the webhook to CoMagic accepting the item",
                &["kind"],
                &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0],
            ),
            integration_end_to_end: histogram(
                registry,
                "bridge_integration_end_to_end_seconds",
                "From ingest receiving the webhook to CoMagic having the item, by integration",
                &["integration"],
                &[0.5, 2.5, 10.0, 60.0, 300.0, 900.0, 3600.0],
            ),
            paused: gauge_vec(
                "bridge_integration_paused",
                "1 while an integration is paused because its CoMagic account refuses us",
                &["integration", "reason"],
            ),
            quota_remaining: gauge_vec(
                "bridge_comagic_quota_remaining",
                "Points left in the integration's CoMagic budget (metadata.limits)",
                &["integration", "window"],
            ),
            integration_delivered: counter(
                registry,
                "bridge_integration_delivered_total",
                "Events CoMagic took, by integration",
                &["integration"],
            ),
            integration_last_delivery: gauge_vec(
                "bridge_integration_last_delivery_timestamp_seconds",
                "When CoMagic last took an event of the integration (Unix time)",
                &["integration"],
            ),
            amqp: AmqpMetrics::new(registry),
            redeliveries: counter(
                registry,
                "bridge_deliver_redeliveries_total",
                "Messages the broker delivered again (after a nack, a lost channel or a restart), by kind",
                &["kind"],
            ),
            in_doubt: counter(
                registry,
                "bridge_deliver_in_doubt_total",
                "Events that may already have been in CoMagic, by what its report said: found (acked, not sent again), absent (sent), unverifiable (sent without asking)",
                &["kind", "outcome"],
            ),
            panics: counter(
                registry,
                "bridge_deliver_panics_total",
                "Panics caught while handling messages (a bug); the messages were handed back, by stage",
                &["stage"],
            ),
            move_failures: single_counter(
                registry,
                "bridge_deliver_move_failures_total",
                "Failed publishes of a message to a retry or dead queue (each is tried again)",
            ),
            ack_frames: counter(
                registry,
                "bridge_deliver_ack_frames_total",
                "Acknowledgement frames sent to the broker: ack_multiple (a coalesced run), ack, nack",
                &["frame"],
            ),
        };
        let kinds = crate::event::EventKind::ALL.map(crate::event::EventKind::as_str);
        at_zero(&metrics.events, &kinds, &DELIVER_OUTCOMES);
        at_zero(&metrics.in_doubt, &kinds, &IN_DOUBT_OUTCOMES);
        // An unreadable message is dead-lettered with kind `unknown`.
        at_zero(&metrics.events, &["unknown"], &["dead_lettered"]);
        metrics
    }
}

/// Every metric family `ingest` and `deliver` export, with the `_bucket`/`_sum`/`_count` series of
/// histograms: what dashboards and alert rules may query (the deploy check compares them).
pub fn exported_metric_names() -> std::collections::BTreeSet<String> {
    use prometheus::core::Collector;
    let (ingest, deliver, comagic, reload) = (Registry::new(), Registry::new(), Registry::new(), Registry::new());
    let i = IngestMetrics::new(&ingest);
    let d = DeliverMetrics::new(&deliver);
    let c = ComagicMetrics::new(&comagic);
    let r = crate::reload::ReloadMetrics::new(&reload);
    let postgres = postgres_up(&reload);
    let j = crate::journey_metrics::JourneyMetrics::new(&deliver);
    let collectors: Vec<&dyn Collector> = vec![
        &j.dropped,
        &j.lost,
        &i.requests,
        &i.spool_events,
        &i.spool_bytes,
        &i.spool_errors,
        &i.amqp.connected,
        &i.amqp.connect_failures,
        &i.amqp.node,
        &d.events,
        &d.attribution,
        &d.paused,
        &d.quota_remaining,
        &d.integration_delivered,
        &d.integration_last_delivery,
        &d.redeliveries,
        &d.in_doubt,
        &d.panics,
        &d.move_failures,
        &d.ack_frames,
        &c.requests,
        &r.failures,
        &r.integrations,
        &r.store_up,
        &r.version,
        &r.invalid,
        &postgres,
    ];
    let histograms: Vec<&dyn Collector> =
        vec![&i.request_duration, &d.end_to_end, &d.integration_end_to_end, &c.request_duration, &c.batch_items];
    let names = |list: &[&dyn Collector]| -> Vec<String> {
        list.iter().flat_map(|m| m.desc().into_iter().map(|d| d.fq_name.clone()).collect::<Vec<_>>()).collect()
    };
    let mut all: std::collections::BTreeSet<String> = names(&collectors).into_iter().collect();
    for h in names(&histograms) {
        all.extend(["_bucket", "_sum", "_count"].map(|suffix| format!("{h}{suffix}")));
    }
    all
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_is_documented_in_docs_metrics() {
        let documented = include_str!("../../docs/metrics.md");
        let families: std::collections::BTreeSet<String> = super::exported_metric_names()
            .into_iter()
            .map(|n| {
                ["_bucket", "_sum", "_count"].iter().fold(n, |n, s| n.strip_suffix(s).map_or(n.clone(), str::to_owned))
            })
            .collect();
        assert!(families.len() >= 20, "{families:?}");
        for name in families {
            assert!(documented.contains(&format!("| `{name}` |")), "docs/metrics.md lacks {name}");
        }
    }
}
