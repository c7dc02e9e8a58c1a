//! Faults: every webhook ingest accepted reaches the sandbox exactly once (or is dead-lettered when
//! CoMagic rejects it), and nothing is lost.

use std::collections::HashSet;
use std::time::Duration;

use bridge_shared::amqp::headers::{self, DeadClass};
use bridge_tests::fixtures::chat;
use bridge_tests::sandbox::{Fault, FaultKind, Upload, Windows};
use bridge_tests::wait_for;
use serde_json::json;

use crate::helpers::{ext_ids, Options, Pipeline, Tenant};

const SHOP: Tenant = Tenant { id: "shop", extra: "" };
const OTHER: Tenant = Tenant { id: "other", extra: "" };

async fn post_chats(p: &Pipeline, integration: &str, from: u64, n: u64) -> HashSet<String> {
    let mut ids = HashSet::new();
    for i in from..from + n {
        ids.insert(p.post(integration, "chat", &chat(i, json!({}))).await);
    }
    ids
}

fn assert_exactly(stored: &[serde_json::Map<String, serde_json::Value>], expected: &HashSet<String>) {
    let ids = ext_ids(stored);
    assert_eq!(ids.len(), expected.len(), "no item stored twice");
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), *expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comagic_answering_500_for_a_while_loses_nothing() {
    let p = Pipeline::start("http500", &[SHOP], Options::default()).await;
    p.sandbox.add_fault(Fault { kind: FaultKind::Http500, ..Default::default() });
    let sent = post_chats(&p, "shop", 1, 30).await;
    wait_for("the events to reach a retry queue", Duration::from_secs(30), || async {
        let retried = p.deliver_metric(r#"bridge_deliver_events_total{kind="chat",outcome="retried"}"#).await;
        (retried >= 30.0).then_some(())
    })
    .await;
    assert!(p.sandbox.stored("shop", Upload::Chats).is_empty());
    p.sandbox.clear_faults();
    let stored = p.wait_stored("shop", Upload::Chats, 30, Duration::from_secs(60)).await;
    assert_exactly(&stored, &sent);
    assert_eq!(p.broker.depth(&p.broker.topology.dead_queue()).await, 0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_minute_quota_is_waited_for_not_hammered() {
    let p = Pipeline::start("quota", &[SHOP], Options { deliver_extra: "batch_max = 10", ..Default::default() }).await;
    p.sandbox.set_windows(Windows { minute: Duration::from_secs(2), day: Duration::from_secs(86_400) });
    p.sandbox.update_account("shop", |a| a.minute_limit = 3);
    let sent = post_chats(&p, "shop", 100, 90).await;
    let stored = p.wait_stored("shop", Upload::Chats, 90, Duration::from_secs(60)).await;
    assert_exactly(&stored, &sent);
    let refused = p.sandbox.calls().iter().filter(|c| c.result == "limit_exceeded").count();
    let ok = p.sandbox.calls().iter().filter(|c| c.result == "ok").count();
    assert!(ok >= 9, "{ok} calls of at most 10 items");
    // metadata.limits says when the budget is spent, so calls wait for the reset instead of failing:
    // at most about one refusal per window (the sandbox's and deliver's clocks meet at its edges).
    assert!(refused <= 3, "{refused} calls refused for the quota");
    assert_eq!(p.broker.depth(&p.broker.topology.dead_queue()).await, 0, "nothing dead-lettered");
    p.stop().await;
}

/// A quota that does not come back after its window's reset is a failure like any other: the event
/// counts attempts, goes through the retry queues and, after `retry_for`, the dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_exceeded_past_the_window_reset_ends_in_the_retry_queues() {
    let p =
        Pipeline::start("quota-stuck", &[SHOP], Options { deliver_extra: "retry_for = \"12s\"", ..Default::default() })
            .await;
    p.sandbox.set_windows(Windows { minute: Duration::from_secs(2), day: Duration::from_secs(86_400) });
    post_chats(&p, "shop", 1, 1).await;
    p.wait_stored("shop", Upload::Chats, 1, Duration::from_secs(10)).await; // the window is known now
    let refuse = Fault {
        account: Some("shop".into()),
        kind: FaultKind::Error,
        mnemonic: Some("limit_exceeded".into()),
        ..Default::default()
    };
    p.sandbox.add_fault(refuse);
    let stuck = p.post("shop", "chat", &chat(2, json!({}))).await;
    let dead = p.the_one_dead_letter("the stuck chat dead-lettered", Duration::from_secs(45)).await;
    let h = &dead.headers;
    assert_eq!(headers::get_str(h, headers::ERROR_CLASS).as_deref(), Some(DeadClass::RetriesExhausted.as_str()));
    assert!(headers::get_str(h, headers::ERROR).unwrap_or_default().contains("limit_exceeded"));
    assert!(headers::get_u64(h, headers::ATTEMPTS).unwrap_or(0) >= 2, "each failed call after the reset is an attempt");
    let envelope = bridge_shared::event::Envelope::from_bytes(&dead.body).unwrap();
    assert_eq!(envelope.event_id.as_str(), stuck);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_tenant_pauses_while_another_flows_and_is_delivered_once_unblocked() {
    let p = Pipeline::start("paused", &[SHOP, OTHER], Options::default()).await;
    p.sandbox.update_account("shop", |a| a.ip_whitelisted = false);
    let blocked = post_chats(&p, "shop", 1, 20).await;
    let flowing = post_chats(&p, "other", 1001, 20).await;
    let stored = p.wait_stored("other", Upload::Chats, 20, Duration::from_secs(30)).await;
    assert_exactly(&stored, &flowing);
    wait_for("the paused gauge", Duration::from_secs(10), || async {
        let g = p.deliver_metric(r#"bridge_integration_paused{integration="shop",reason="ip_not_whitelisted"}"#).await;
        (g == 1.0).then_some(())
    })
    .await;
    let refused = |p: &Pipeline| p.sandbox.calls().iter().filter(|c| c.result == "ip_not_whitelisted").count();
    let refused_before = refused(&p);
    // Parked for a 10 s retry tier; the 1-2 s pauses let at most one call through per return.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(refused(&p) <= refused_before + 1, "a paused tenant is not hammered");
    p.sandbox.update_account("shop", |a| a.ip_whitelisted = true);
    let stored = p.wait_stored("shop", Upload::Chats, 20, Duration::from_secs(60)).await;
    assert_exactly(&stored, &blocked);
    assert!(refused(&p) <= 4, "{} refused calls", refused(&p));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_item_in_fifty_is_the_only_one_dead_lettered() {
    // Telegram chats go to campaign 9999, which the account does not have.
    let shop = Tenant { id: "shop", extra: "[integration.messengers]\ntelegram = { campaign_id = 9999 }" };
    let p = Pipeline::start("bad-item", &[shop], Options { linger_ms: 2000, ..Default::default() }).await;
    let mut good = post_chats(&p, "shop", 1, 25).await;
    let bad = p.post("shop", "chat", &chat(500, json!({"source": {"type": {"id": "telegram"}}}))).await;
    good.extend(post_chats(&p, "shop", 26, 24).await);
    let stored = p.wait_stored("shop", Upload::Chats, 49, Duration::from_secs(30)).await;
    assert_exactly(&stored, &good);
    let dead = p.the_one_dead_letter("the bad item in the dead-letter queue", Duration::from_secs(10)).await;
    let h = &dead.headers;
    assert_eq!(headers::get_str(h, headers::ERROR_CLASS).as_deref(), Some(DeadClass::ComagicRejected.as_str()));
    assert_eq!(headers::get_str(h, headers::INTEGRATION).as_deref(), Some("shop"));
    assert_eq!(headers::get_str(h, headers::KIND).as_deref(), Some("chat"));
    assert!(headers::get_str(h, headers::ERROR).unwrap().contains("campaign_id"));
    assert!(headers::get_str(h, headers::DEAD_AT).is_some() && headers::get_u64(h, headers::ATTEMPTS) == Some(1));
    let envelope = bridge_shared::event::Envelope::from_bytes(&dead.body).unwrap();
    assert_eq!(envelope.event_id.as_str(), bad, "the dead letter is the original envelope");
    let uploads = p.sandbox.calls().into_iter().filter(|c| c.method == "upload.chats").count();
    assert!(uploads <= 3, "{uploads} calls: the bad item is isolated by its field index");
    p.stop().await;
}

/// Account `slow` takes 8 s per call, longer than the deadline of [`assert_the_other_tenant_flows`].
fn slow_down_the_slow_account(p: &Pipeline) {
    p.sandbox.add_fault(Fault {
        account: Some("slow".into()),
        kind: FaultKind::Latency,
        latency_ms: 8_000,
        ..Default::default()
    });
}

/// Tenant `other`'s chats are delivered within 5 s, whatever the rest are doing; stops the pipeline.
async fn assert_the_other_tenant_flows(p: Pipeline) {
    let fast = post_chats(&p, "other", 5001, 5).await;
    let stored = p.wait_stored("other", Upload::Chats, 5, Duration::from_secs(5)).await;
    assert_exactly(&stored, &fast);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_account_does_not_hold_up_another_tenant() {
    const SLOW: Tenant = Tenant { id: "slow", extra: "" };
    let p = Pipeline::start("slow-tenant", &[SLOW, OTHER], Options::default()).await;
    slow_down_the_slow_account(&p);
    // 20 batches, more than every call slot. The first call probes the account's budget alone;
    // once it answers (8 s) the others start.
    post_chats(&p, "slow", 1, 1000).await;
    wait_for("the slow tenant's calls to fill the slots", Duration::from_secs(20), || async {
        // Calls started (the sandbox records a call only when it answers).
        let started = p.deliver_metric(r#"bridge_comagic_batch_items_count{method="upload.chats"}"#).await;
        (started >= 14.0).then_some(())
    })
    .await;
    assert_the_other_tenant_flows(p).await;
}

/// After a CoMagic outage, a tenant's account refuses the bridge for a while: its events (the
/// delivered ones and the ones still waiting) are taken from the queue a few times over the whole
/// pause, never in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_after_an_outage_does_not_spin_the_tenants_events() {
    let options = Options { deliver_extra: "pause_initial = \"20s\"\npause_max = \"20s\"", ..Default::default() };
    let p = Pipeline::start("pause-spin", &[SHOP], options).await;
    p.sandbox.add_fault(Fault { kind: FaultKind::Http500, ..Default::default() });
    let outage = tokio::time::Instant::now();
    let delivered_first = post_chats(&p, "shop", 1, 250).await;
    tokio::time::sleep_until(outage + Duration::from_secs(15)).await;
    p.sandbox.clear_faults();
    p.wait_stored("shop", Upload::Chats, 100, Duration::from_secs(60)).await;
    p.sandbox.update_account("shop", |a| a.ip_whitelisted = false);
    let waiting = post_chats(&p, "shop", 1001, 20).await;
    wait_for("the pause", Duration::from_secs(10), || async {
        let g = p.deliver_metric(r#"bridge_integration_paused{integration="shop",reason="ip_not_whitelisted"}"#).await;
        (g == 1.0).then_some(())
    })
    .await;
    let redelivered = r#"bridge_deliver_redeliveries_total{kind="chat"}"#;
    let duplicates = r#"bridge_deliver_events_total{kind="chat",outcome="duplicate"}"#;
    let (redelivered_before, duplicates_before) =
        (p.deliver_metric(redelivered).await, p.deliver_metric(duplicates).await);
    // Most of the pause: a spin would take each event from the queue many times a second.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let redelivered_during = p.deliver_metric(redelivered).await - redelivered_before;
    let duplicates_during = p.deliver_metric(duplicates).await - duplicates_before;
    println!("during the pause: {redelivered_during} redeliveries, {duplicates_during} ledger duplicates");
    assert!(redelivered_during <= 40.0, "{redelivered_during} redeliveries during the pause");
    assert!(duplicates_during <= 60.0, "{duplicates_during} delivered events came back during the pause");
    p.sandbox.update_account("shop", |a| a.ip_whitelisted = true);
    let all = p.wait_stored("shop", Upload::Chats, 270, Duration::from_secs(120)).await;
    assert_exactly(&all, &delivered_first.union(&waiting).cloned().collect());
    // Everything is delivered, so nothing may still wait anywhere: no copy of an event in another
    // retry tier, to come back in ten minutes or an hour (each retry used to land in every tier).
    wait_for("every queue empty once all is delivered", Duration::from_secs(30), || async {
        (p.broker.waiting().await == 0).then_some(())
    })
    .await;
    p.stop().await;
}

/// The retry queues are gone for 10 s (a leader election, an operator's mistake) while a paused
/// tenant's events are being parked there: they wait in hand and are parked once the queues are
/// back, and none becomes `poison`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_outage_of_the_retry_queues_makes_no_event_poison() {
    let p = Pipeline::start("move-outage", &[SHOP], Options::default()).await;
    let t = &p.broker.topology;
    p.sandbox.update_account("shop", |a| a.ip_whitelisted = false);
    for (tier, _) in bridge_shared::amqp::topology::RETRY_TIERS {
        p.broker.delete_queue(&t.retry_queue(tier)).await;
    }
    let sent = post_chats(&p, "shop", 1, 20).await;
    wait_for("moves to the missing retry queues to fail", Duration::from_secs(10), || async {
        (p.deliver_metric("bridge_deliver_move_failures_total").await >= 20.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    p.broker.declare().await;
    p.sandbox.update_account("shop", |a| a.ip_whitelisted = true);
    let stored = p.wait_stored("shop", Upload::Chats, 20, Duration::from_secs(60)).await;
    assert_exactly(&stored, &sent);
    assert_eq!(p.broker.depth(&t.dead_queue()).await, 0, "no event dead-lettered");
    p.stop().await;
}

/// One tenant's chat and offline lanes both busy on a slow account, and a third tenant waiting for
/// its spent quota: the reserved call slots still serve another tenant at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_both_lanes_busy_and_one_waiting_for_quota_leave_slots_to_others() {
    const SLOW: Tenant = Tenant { id: "slow", extra: "" };
    const THRIFTY: Tenant = Tenant { id: "thrifty", extra: "" };
    let p = Pipeline::start("shared-slots", &[SLOW, THRIFTY, OTHER], Options::default()).await;
    p.sandbox.set_windows(Windows { minute: Duration::from_secs(50), day: Duration::from_secs(86_400) });
    p.sandbox.update_account("thrifty", |a| a.minute_limit = 1);
    slow_down_the_slow_account(&p);
    post_chats(&p, "thrifty", 1, 400).await;
    wait_for("the thrifty tenant to spend its quota", Duration::from_secs(10), || async {
        let left = p.deliver_metric(r#"bridge_comagic_quota_remaining{integration="thrifty",window="minute"}"#).await;
        let known = p.sandbox.calls().iter().any(|c| c.account.as_deref() == Some("thrifty"));
        (known && left == 0.0).then_some(())
    })
    .await;
    for i in 0..500 {
        p.post("slow", "chat", &chat(10_000 + i, json!({}))).await;
        p.post("slow", "offline", &bridge_tests::fixtures::offline(&format!("c-{i}"), "Still open?")).await;
    }
    wait_for("the slow tenant's calls to take its share of the slots", Duration::from_secs(20), || async {
        let chats = p.deliver_metric(r#"bridge_comagic_batch_items_count{method="upload.chats"}"#).await;
        let offline = p.deliver_metric(r#"bridge_comagic_batch_items_count{method="upload.offline_messages"}"#).await;
        // The thrifty tenant's one call counts among the chats.
        (chats + offline >= 15.0 && offline >= 1.0).then_some(())
    })
    .await;
    assert_the_other_tenant_flows(p).await;
}

/// CoMagic refuses a whole request without naming an item: the batch is retried whole, later, not
/// split down to single items and dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_wide_error_retries_the_batch_whole() {
    let p = Pipeline::start("request-wide", &[SHOP], Options { linger_ms: 2000, ..Default::default() }).await;
    p.sandbox.add_fault(Fault {
        kind: FaultKind::Error,
        mnemonic: Some("invalid_parameter_value".into()),
        ..Default::default()
    });
    let sent = post_chats(&p, "shop", 1, 50).await;
    wait_for("the batch to reach a retry queue", Duration::from_secs(30), || async {
        let retried = p.deliver_metric(r#"bridge_deliver_events_total{kind="chat",outcome="retried"}"#).await;
        (retried >= 50.0).then_some(())
    })
    .await;
    let refused = p.sandbox.calls().iter().filter(|c| c.result == "invalid_parameter_value").count();
    assert!(refused <= 2, "{refused} calls: the batch is not split");
    p.sandbox.clear_faults();
    let stored = p.wait_stored("shop", Upload::Chats, 50, Duration::from_secs(60)).await;
    assert_exactly(&stored, &sent);
    assert_eq!(p.broker.depth(&p.broker.topology.dead_queue()).await, 0);
    p.stop().await;
}

/// A tenant nobody repairs: its events are parked for `park_for`, then dead-lettered as
/// `tenant_paused`, and a replay once the account is fixed delivers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_paused_for_longer_than_park_for_is_dead_lettered_and_replayable() {
    let extra = "pause_initial = \"15s\"\npause_max = \"15s\"\npark_for = \"10s\"";
    let p = Pipeline::start("park-for", &[SHOP], Options { deliver_extra: extra, ..Default::default() }).await;
    p.sandbox.update_account("shop", |a| a.ip_whitelisted = false);
    let sent = post_chats(&p, "shop", 1, 10).await;
    let dead_queue = p.broker.topology.dead_queue();
    wait_for("the parked events to be dead-lettered", Duration::from_secs(40), || async {
        (p.broker.depth(&dead_queue).await == 10).then_some(())
    })
    .await;
    p.sandbox.update_account("shop", |a| a.ip_whitelisted = true);
    let stats = crate::helpers::deliver_command(&p.config, &["dlq", "stats", "--json"]).await;
    assert!(stats.stdout.contains(r#""class":"tenant_paused","count":10"#), "{}", stats.stdout);
    let replay = crate::helpers::deliver_command(&p.config, &["dlq", "replay", "--class", "tenant_paused"]).await;
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    // The pause (15 s) may not have ended: the bridge probes the account once its parked events return.
    let stored = p.wait_stored("shop", Upload::Chats, 10, Duration::from_secs(60)).await;
    assert_exactly(&stored, &sent);
    p.stop().await;
}

/// CoMagic's message quotes a phone and an e-mail: the dead letter's `x-bridge-error` masks both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_in_a_comagic_message_are_masked_in_the_dead_letter() {
    let p = Pipeline::start("masked", &[SHOP], Options { linger_ms: 1000, ..Default::default() }).await;
    p.sandbox.add_fault(Fault {
        kind: FaultKind::Error,
        mnemonic: Some("invalid_parameter_value".into()),
        field: Some("chats.1.phone".into()),
        message: Some("phone 79123456789 of ivan.petrov@example.ru is not allowed".into()),
        calls: Some(1),
        ..Default::default()
    });
    post_chats(&p, "shop", 1, 3).await;
    let dead_queue = p.broker.topology.dead_queue();
    wait_for("the refused item in the dead-letter queue", Duration::from_secs(20), || async {
        (p.broker.depth(&dead_queue).await == 1).then_some(())
    })
    .await;
    let dead = p.broker.take_all(&dead_queue).await;
    let error = headers::get_str(&dead[0].headers, headers::ERROR).unwrap();
    assert!(error.contains("7********89") && error.contains("i***@example.ru"), "{error}");
    assert!(!error.contains("79123456789") && !error.contains("ivan.petrov"), "{error}");
    p.wait_stored("shop", Upload::Chats, 2, Duration::from_secs(20)).await;
    p.stop().await;
}
