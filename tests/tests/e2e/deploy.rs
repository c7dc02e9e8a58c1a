//! The deploy files agree with the code: the RabbitMQ definitions are the topology the services
//! declare, every metric a dashboard or alert queries is one that exists, and every alert has a
//! runbook section. (`scripts/check-deploy.sh` runs promtool, docker-compose and a Kubernetes
//! schema check on the same files.)

use std::collections::BTreeSet;
use std::path::PathBuf;

use bridge_shared::amqp::topology::{definitions, Topology};
use serde_json::Value;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `UPDATE_DEFINITIONS=1 cargo test -p bridge-tests deploy` rewrites the file from the code.
#[test]
fn rabbitmq_definitions_are_the_topology_the_services_declare() {
    let expected = definitions(&Topology::new("bridge"), "/");
    let path = "deploy/rabbitmq/definitions.json";
    if std::env::var_os("UPDATE_DEFINITIONS").is_some() {
        std::fs::write(repo_file(path), serde_json::to_string_pretty(&expected).unwrap() + "\n").unwrap();
    }
    let file: Value = serde_json::from_str(&read(path)).unwrap();
    assert_eq!(file, expected, "{path} differs from shared/src/amqp/topology.rs (see this test's doc)");
}

/// Metric names in PromQL text: identifiers with one of our or RabbitMQ's prefixes, and `up`.
fn metric_names(promql: &str) -> BTreeSet<String> {
    promql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| ["bridge_", "rabbitmq_", "comagic_sandbox_", "erlang_"].iter().any(|p| t.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

fn known_metrics() -> BTreeSet<String> {
    let mut known = bridge_shared::telemetry::exported_metric_names();
    known.extend(
        read("deploy/rabbitmq/prometheus-metrics.txt")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.trim().to_owned()),
    );
    known.extend(["comagic_sandbox_requests_total", "comagic_sandbox_items_total"].map(String::from));
    known
}

fn dashboard_exprs() -> Vec<String> {
    bridge_tests::dashboard::panels().into_iter().flat_map(|p| p.exprs).collect()
}

#[test]
fn the_dashboard_queries_only_metrics_that_exist_and_covers_each_topic() {
    let known = known_metrics();
    let exprs = dashboard_exprs();
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    let unknown: Vec<&String> = used.difference(&known).collect();
    assert!(unknown.is_empty(), "the dashboard queries metrics nobody exports: {unknown:?}");
    for topic in [
        "bridge_ingest_requests_total",
        "bridge_ingest_request_duration_seconds_bucket",
        "bridge_ingest_spool_events",
        "bridge_amqp_connected",
        "rabbitmq_queue_messages_ready",
        "rabbitmq_global_messages_dead_lettered_expired_total",
        "bridge_comagic_requests_total",
        "bridge_deliver_end_to_end_seconds_bucket",
        "bridge_comagic_batch_items_sum",
        "bridge_deliver_attribution_total",
        "bridge_integration_paused",
        "bridge_integration_invalid",
        "bridge_comagic_quota_remaining",
    ] {
        assert!(used.contains(topic), "no panel shows {topic}");
    }
}

#[test]
fn alerts_query_only_metrics_that_exist_and_each_has_a_runbook_section() {
    let rules = read("deploy/prometheus/alerts.yml");
    let used = metric_names(&rules);
    let known = known_metrics();
    let unknown: Vec<&String> = used.difference(&known).collect();
    assert!(unknown.is_empty(), "alert rules query metrics nobody exports: {unknown:?}");
    let runbook = read("deploy/RUNBOOK.md");
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert!(alerts.len() >= 7, "{alerts:?}");
    for alert in alerts {
        assert!(runbook.contains(&format!("## {alert}")), "RUNBOOK.md has no section for {alert}");
        let anchor = format!("deploy/RUNBOOK.md#{}", alert.to_lowercase());
        assert!(rules.contains(&anchor), "{alert} links its runbook section ({anchor})");
    }
}

#[test]
fn the_metric_name_scan_finds_names_and_ignores_the_rest() {
    let names = metric_names(r#"sum by (le) (rate(bridge_x_bucket{queue=~"bridge\\..*"}[5m])) / up"#);
    assert_eq!(names, BTreeSet::from(["bridge_x_bucket".to_owned()]));
}

/// The repository documents itself: no file sends a reader to a document outside it.
#[test]
fn no_file_cites_a_document_outside_the_repository() {
    fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !["target", ".git", "var", "node_modules"].contains(&name.as_str()) {
                    walk(&path, found);
                }
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                if ["CONTRACT.md", "shared/reference"].iter().any(|p| text.contains(p)) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    let mut found = Vec::new();
    walk(&repo_file(""), &mut found);
    // This test names the patterns it looks for.
    found.retain(|f| !f.ends_with("tests/tests/e2e/deploy.rs"));
    assert!(found.is_empty(), "files citing documents outside the repository: {found:?}");
}

/// A `key: |` block of a YAML file, unindented.
fn yaml_block(text: &str, key: &str) -> String {
    let lines = text.lines().skip_while(|l| l.trim() != format!("{key}: |")).skip(1);
    let first = lines.clone().next().expect("a block under the key");
    let indent = first.len() - first.trim_start().len();
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_shipped_configs_are_valid_settings() {
    let env = std::collections::HashMap::new();
    let k8s = yaml_block(&read("deploy/k8s/config.yaml"), "bridge.toml");
    let settings = bridge_shared::settings::Settings::from_toml(&k8s, &env).expect("the ConfigMap's bridge.toml");
    assert_eq!(settings.console.listen.port(), 9093);
    let integrations = yaml_block(&read("deploy/k8s/config.yaml"), "integrations.toml");
    let env: std::collections::HashMap<String, String> = [
        ("BRIDGE_SECRET_ACME_SHOP_WEBHOOK_TOKEN", "a".repeat(30)),
        ("BRIDGE_SECRET_ACME_SHOP_COMAGIC_TOKEN", "b".repeat(10)),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .into();
    bridge_shared::integrations::Integrations::from_toml(&integrations, &env).expect("the ConfigMap's integrations");
    bridge_shared::settings::Settings::from_toml(&read("deploy/local/bridge.toml"), &Default::default())
        .expect("deploy/local/bridge.toml");
}
