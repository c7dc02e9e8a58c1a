//! `deliver dlq`: the real binary against a real dead-letter queue, and replays delivered through
//! the running pipeline to the sandbox.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bridge_shared::amqp::headers::{self, DeadClass};
use bridge_tests::fixtures::chat;
use bridge_tests::sandbox::Upload;
use bridge_tests::wait_for;
use lapin::types::FieldTable;
use serde_json::{json, Value};

use crate::helpers::{deliver_command, ext_ids, Options, Pipeline, Tenant};

const ALPHA: Tenant = Tenant { id: "alpha", extra: "" };
const BETA: Tenant = Tenant { id: "beta", extra: "" };

/// Puts `n` dead letters of one integration and class into the dead-letter queue, as deliver
/// writes them; returns their event ids.
async fn seed(p: &Pipeline, integration: &str, class: DeadClass, n: u64, from: u64) -> Vec<String> {
    let publisher = p.broker.publisher().await;
    let mut ids = Vec::new();
    for i in from..from + n {
        let event_id = format!("vb-seed-{integration}-{i}");
        let payload =
            if class == DeadClass::InvalidEvent { json!({"not": "a verbox webhook"}) } else { chat(i, json!({})) };
        let envelope = json!({
            "schema": 1, "event_id": event_id, "integration": integration, "kind": "chat",
            "received_at": chrono::Utc::now().to_rfc3339(), "payload": payload,
        });
        let mut h = FieldTable::default();
        headers::set_str(&mut h, headers::ERROR_CLASS, class.as_str());
        headers::set_str(&mut h, headers::ERROR, "seeded by the test");
        headers::set_u64(&mut h, headers::ATTEMPTS, 3);
        headers::set_str(&mut h, headers::DEAD_AT, &chrono::Utc::now().to_rfc3339());
        headers::set_str(&mut h, headers::INTEGRATION, integration);
        headers::set_str(&mut h, headers::KIND, "chat");
        let body = serde_json::to_vec(&envelope).unwrap();
        publisher.publish(&p.broker.topology.dead_exchange(), "chat", &body, h).await.unwrap();
        ids.push(event_id);
    }
    ids
}

async fn wait_dead(p: &Pipeline, n: u32) {
    let queue = p.broker.topology.dead_queue();
    wait_for(&format!("{n} messages in the dead-letter queue"), Duration::from_secs(30), || async {
        (p.broker.depth(&queue).await == n).then_some(())
    })
    .await;
}

/// `list --json` as (integration, class) → count.
async fn listed(p: &Pipeline, filters: &[&str]) -> BTreeMap<(String, String), usize> {
    let run = deliver_command(&p.config, &[&["dlq", "list", "--json"], filters].concat()).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut counts = BTreeMap::new();
    for line in run.stdout.lines() {
        let letter: Value = serde_json::from_str(line).unwrap();
        let key = (letter["integration"].as_str().unwrap().to_owned(), letter["class"].as_str().unwrap().to_owned());
        *counts.entry(key).or_default() += 1;
    }
    counts
}

fn counts(entries: &[(&str, &str, usize)]) -> BTreeMap<(String, String), usize> {
    entries.iter().map(|(i, c, n)| ((i.to_string(), c.to_string()), *n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_replay_export_and_purge_exactly_what_they_select() {
    let p = Pipeline::start("dlq_ops", &[ALPHA, BETA], Options::default()).await;
    // Beta's campaign is inactive: CoMagic rejects its chats and deliver dead-letters them.
    p.sandbox.update_account("beta", |a| a.campaigns.iter_mut().for_each(|c| c.status = "inactive".into()));
    let mut rejected = HashSet::new();
    for i in 0..10 {
        rejected.insert(p.post("beta", "chat", &chat(7000 + i, json!({}))).await);
    }
    wait_dead(&p, 10).await;
    seed(&p, "alpha", DeadClass::ComagicRejected, 5, 0).await;
    seed(&p, "alpha", DeadClass::RetriesExhausted, 5, 100).await;
    seed(&p, "beta", DeadClass::RetriesExhausted, 5, 200).await;
    seed(&p, "alpha", DeadClass::InvalidEvent, 5, 300).await;
    wait_dead(&p, 30).await;

    let all = counts(&[
        ("alpha", "comagic_rejected", 5),
        ("alpha", "invalid_event", 5),
        ("alpha", "retries_exhausted", 5),
        ("beta", "comagic_rejected", 10),
        ("beta", "retries_exhausted", 5),
    ]);
    assert_eq!(listed(&p, &[]).await, all, "list shows exactly the dead letters");
    wait_dead(&p, 30).await;

    let table =
        deliver_command(&p.config, &["dlq", "list", "--class", "comagic_rejected", "--integration", "beta"]).await;
    let rows: Vec<&str> = table.stdout.lines().skip(1).collect();
    assert!(table.stdout.starts_with("DEAD AT (UTC)"), "{}", table.stdout);
    assert_eq!(rows.len(), 10, "{}", table.stdout);
    assert!(rows
        .iter()
        .all(|r| r.contains("beta") && r.contains("comagic_rejected") && r.contains("campaign_is_inactive")));

    let stats = deliver_command(&p.config, &["dlq", "stats", "--json"]).await;
    let stats: Value = serde_json::from_str(&stats.stdout).unwrap();
    assert_eq!(stats["total"], 30);
    let grouped: usize =
        stats["groups"].as_array().unwrap().iter().map(|g| g["count"].as_u64().unwrap() as usize).sum();
    assert_eq!(grouped, 30);
    assert!(stats["groups"]
        .as_array()
        .unwrap()
        .contains(&json!({"integration": "beta", "kind": "chat", "class": "comagic_rejected", "count": 10})));

    let out = p.dir.path().join("dead.jsonl");
    let export = deliver_command(&p.config, &["dlq", "export", "--out", out.to_str().unwrap()]).await;
    assert_eq!(export.code, 0, "{}", export.stderr);
    let lines: Vec<Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 30);
    assert!(lines
        .iter()
        .all(|l| l["envelope"]["event_id"].is_string() && l["headers"]["x-bridge-error-class"].is_string()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600, "readable by its owner only");
    let again = deliver_command(&p.config, &["dlq", "export", "--out", out.to_str().unwrap()]).await;
    assert_eq!(again.code, 1, "an existing file is not overwritten: {}", again.stderr);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    // A link to a file elsewhere is replaced with --force, never written through.
    let target = p.dir.path().join("precious.txt");
    std::fs::write(&target, "keep me").unwrap();
    let link = p.dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let through = deliver_command(&p.config, &["dlq", "export", "--out", link.to_str().unwrap()]).await;
    assert_eq!(through.code, 1, "{}", through.stderr);
    let forced = deliver_command(&p.config, &["dlq", "export", "--force", "--out", link.to_str().unwrap()]).await;
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    assert!(!std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    wait_dead(&p, 30).await;

    let refused = deliver_command(&p.config, &["dlq", "purge", "--class", "invalid_event"]).await;
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    wait_dead(&p, 30).await;

    let dry = deliver_command(&p.config, &["dlq", "replay", "--integration", "beta", "--dry-run"]).await;
    assert!(dry.stdout.contains("would replay 15 of 30"), "{}", dry.stdout);
    wait_dead(&p, 30).await;

    // The cause is fixed; replay only beta's rejected chats.
    p.sandbox.update_account("beta", |a| a.campaigns.iter_mut().for_each(|c| c.status = "active".into()));
    let replay =
        deliver_command(&p.config, &["dlq", "replay", "--class", "comagic_rejected", "--integration", "beta"]).await;
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    assert!(replay.stdout.contains("replayed 10 of 30"), "{}", replay.stdout);
    let stored = p.wait_stored("beta", Upload::Chats, 10, Duration::from_secs(30)).await;
    assert_eq!(ext_ids(&stored).into_iter().collect::<HashSet<_>>(), rejected);
    wait_dead(&p, 20).await;
    let mut rest = all.clone();
    rest.remove(&("beta".into(), "comagic_rejected".into()));
    assert_eq!(listed(&p, &[]).await, rest, "the non-matching dead letters stay");

    let purge = deliver_command(&p.config, &["dlq", "purge", "--class", "invalid_event", "--yes"]).await;
    assert!(purge.stdout.contains("purged 5 of 20"), "{}", purge.stdout);
    wait_dead(&p, 15).await;
    assert_eq!(p.sandbox.stored("alpha", Upload::Chats).len(), 0, "nothing else was replayed");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_halfway_and_run_again_delivers_each_once() {
    let p = Pipeline::start("dlq_kill", &[ALPHA], Options::default()).await;
    let seeded: HashSet<String> = seed(&p, "alpha", DeadClass::RetriesExhausted, 40, 0).await.into_iter().collect();
    wait_dead(&p, 40).await;
    let mut slow = tokio::process::Command::new(env!("CARGO_BIN_EXE_deliver"))
        .arg("--config")
        .arg(&p.config)
        .args(["dlq", "replay", "--rate", "20"])
        .spawn()
        .unwrap();
    let queue = p.broker.topology.dead_queue();
    wait_for("the first replay to be under way", Duration::from_secs(30), || async {
        (p.broker.depth(&queue).await <= 30).then_some(())
    })
    .await;
    slow.start_kill().unwrap();
    slow.wait().await.unwrap();
    let left = p.broker.depth(&queue).await;
    assert!(left > 0, "killed halfway, not at the end");

    let again = deliver_command(&p.config, &["dlq", "replay"]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    let stored = p.wait_stored("alpha", Upload::Chats, 40, Duration::from_secs(30)).await;
    let stored_ids = ext_ids(&stored);
    assert_eq!(stored_ids.len(), 40, "each delivered once");
    assert_eq!(stored_ids.into_iter().collect::<HashSet<_>>(), seeded);
    // At most the one message in hand at the kill goes out twice (and CoMagic's ext_id check or the
    // ledger absorbs it).
    let repeats = p.sandbox.calls().iter().filter(|c| c.result == "duplicate_entity").count();
    assert!(repeats <= 1, "{repeats} uploads repeated");
    wait_dead(&p, 0).await;
    p.stop().await;
}
