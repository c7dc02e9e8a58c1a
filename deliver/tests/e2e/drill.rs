//! What the drills on the local 3-node cluster share (the fixed one in `cluster.rs`, the seeded
//! one in `chaos`): `scripts/cluster.sh`, the pipeline on the cluster (20 integrations, the
//! PostgreSQL ledger, deliver replicas run as binaries, a sandbox that stores a repeated `ext_id`
//! as a second item so a copy shows), posting one webhook, and what the sandbox ended up storing.
//! One place each, so both drills judge a run by the same rules.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bridge_tests::config::webhook_url;
use bridge_tests::fixtures::WEBHOOK_TOKEN;
use bridge_tests::sandbox::{Sandbox, Upload};
use bridge_tests::wait_for;
use serde_json::Value;

use crate::helpers::{shared_ledger, Options, Pipeline, Tenant};

/// Integrations `shop00` .. `shop19`; webhook `i` belongs to `shop{i % 20}`.
pub const TENANTS: u64 = 20;

/// `scripts/cluster.sh ARGS`: its output, trimmed.
pub fn cluster(args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
    let out = std::process::Command::new(script).args(args).output().expect("scripts/cluster.sh runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/cluster.sh {args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The integration webhook `i` is posted to.
pub fn tenant_of(i: u64) -> String {
    format!("shop{:02}", i % TENANTS)
}

/// The pipeline on the running cluster, and the environment its deliver replicas start with (the
/// cluster's node URLs); the test starts them with `start_deliver_binary_with`.
pub async fn pipeline_on_cluster(test: &str) -> (Pipeline, [(&'static str, String); 1]) {
    let urls: Vec<String> = cluster(&["urls"]).split(',').map(str::to_owned).collect();
    // The tenants' names and the config's lines live as long as the test process.
    let tenants: Vec<Tenant> =
        (0..TENANTS).map(|i| Tenant { id: Box::leak(tenant_of(i).into_boxed_str()), extra: "" }).collect();
    let options = Options {
        amqp_urls: Some(urls.clone()),
        test_broker_url: Some(urls[0].clone()),
        external_deliver: true,
        deliver_extra: shared_ledger(),
        ..Default::default()
    };
    let p = Pipeline::start(test, &tenants, options).await;
    for i in 0..TENANTS {
        p.sandbox.update_account(&tenant_of(i), |a| a.refuses_repeated_ext_id = false);
    }
    (p, [("BRIDGE__AMQP__URLS", urls.join(","))])
}

/// Posts one chat webhook to the ingest at `address`: the status and the answer's JSON.
pub async fn post_one(
    http: &reqwest::Client,
    address: &str,
    tenant: &str,
    body: &Value,
) -> reqwest::Result<(u16, Value)> {
    let url = webhook_url(address, tenant, "chat", WEBHOOK_TOKEN);
    let response = http.post(url).body(body.to_string()).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// Waits until the sandbox holds a chat for each of `answered` event ids and nothing waits in the
/// test's queues any more, over a new connection to the broker (the first node may have been
/// killed under the old one). Whether that happened within `deadline`: a drill prints what it
/// found either way before it judges.
pub async fn settle(p: &mut Pipeline, answered: usize, deadline: Duration) -> bool {
    p.broker.reconnect().await;
    let started = Instant::now();
    wait_for("every answered webhook stored and every copy settled", deadline * 2, || async {
        // The cheap counts first: reading every stored chat is left for when they agree.
        let enough = p.sandbox.stored_total() >= answered && p.broker.waiting().await == 0;
        if enough && stored_chats(&p.sandbox).len() >= answered {
            Some(true)
        } else {
            (started.elapsed() > deadline).then_some(false)
        }
    })
    .await
}

/// One `ext_id` as the sandbox stored it: how many times, and when first.
pub struct Stored {
    pub times: usize,
    pub first: Instant,
}

/// Every chat the sandbox stored, over all the integrations, by `ext_id`.
pub fn stored_chats(sandbox: &Sandbox) -> HashMap<String, Stored> {
    let mut stored: HashMap<String, Stored> = HashMap::new();
    for i in 0..TENANTS {
        for (ext_id, at) in sandbox.stored_times(&tenant_of(i), Upload::Chats) {
            let entry = stored.entry(ext_id).or_insert(Stored { times: 0, first: at });
            entry.times += 1;
            entry.first = entry.first.min(at);
        }
    }
    stored
}

/// The `ext_id`s stored more than once.
pub fn stored_twice(stored: &HashMap<String, Stored>) -> Vec<&str> {
    stored.iter().filter(|(_, s)| s.times > 1).map(|(id, _)| id.as_str()).collect()
}
