//! deliver's life: integrations.toml edited under it, SIGTERM in the middle of work, acks
//! coalesced and all sent, and messages it can never deliver (unreadable, unknown integration,
//! poison) moved to the dead-letter queue.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bridge_shared::amqp::headers;
use bridge_tests::fixtures::chat;
use bridge_tests::sandbox::{Fault, FaultKind, Upload};
use bridge_tests::wait_for;
use lapin::types::FieldTable;
use serde_json::{json, Map, Value};

use crate::helpers::{ext_ids, integrations_toml, start_deliver_binary, Options, Pipeline, Tenant};

const SHOP: Tenant = Tenant { id: "shop", extra: "" };
const OTHER: Tenant = Tenant { id: "other", extra: "" };
/// Refused by every process (a token set twice, inline and by variable), and never good before.
const REFUSED: Tenant = Tenant { id: "fresh", extra: "comagic_token_env = \"BRIDGE_TEST_VARIABLE_NEVER_SET\"" };

fn campaign_of(stored: &[Map<String, Value>], event_id: &str) -> Value {
    let item = stored.iter().find(|i| i["ext_id"] == event_id).expect("the event was stored");
    item["campaign_id"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_applies_to_the_next_batch_and_a_broken_one_keeps_the_last_good_set() {
    let p = Pipeline::start("reload", &[SHOP, OTHER], Options::default()).await;
    let before = p.post("shop", "chat", &chat(1, json!({}))).await;
    let stored = p.wait_stored("shop", Upload::Chats, 1, Duration::from_secs(20)).await;
    assert_eq!(campaign_of(&stored, &before), 5001);

    // The tenant moves its default to campaign 5002 (and a third integration is added, which is how
    // the test sees the reload happen: bridge_config_integrations becomes 3).
    let file = p.dir.path().join("integrations.toml");
    let moved = Tenant { id: "shop", extra: "default = { campaign_id = 5002 }" };
    let third = Tenant { id: "third", extra: "" };
    std::fs::write(&file, integrations_toml(p.sandbox.url(), &[moved, OTHER, third])).unwrap();
    wait_for("deliver to load the edit", Duration::from_secs(20), || async {
        (p.deliver_metric("bridge_config_integrations").await == 3.0).then_some(())
    })
    .await;
    let after = p.post("shop", "chat", &chat(2, json!({}))).await;
    let stored = p.wait_stored("shop", Upload::Chats, 2, Duration::from_secs(20)).await;
    assert_eq!(campaign_of(&stored, &after), 5002, "the new default applies without a restart");

    std::fs::write(&file, "[[integration]]\nid = \"shop\"\nthis is not toml").unwrap();
    wait_for("deliver to refuse the broken edit", Duration::from_secs(20), || async {
        (p.deliver_metric("bridge_config_reload_failures_total").await >= 1.0).then_some(())
    })
    .await;
    let broken = p.post("shop", "chat", &chat(3, json!({}))).await;
    let other = p.post("other", "chat", &chat(4, json!({}))).await;
    let stored = p.wait_stored("shop", Upload::Chats, 3, Duration::from_secs(20)).await;
    assert_eq!(campaign_of(&stored, &broken), 5002, "the last good set stays in force");
    let stored = p.wait_stored("other", Upload::Chats, 1, Duration::from_secs(20)).await;
    assert_eq!(campaign_of(&stored, &other), 5001);
    assert_eq!(p.deliver_metric("bridge_config_integrations").await, 3.0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_work_finishes_what_is_in_hand_and_loses_nothing() {
    // A small window, so most events are still in the queue (not in hand) at the signal.
    let options = Options {
        external_deliver: true,
        linger_ms: 50,
        deliver_extra: "prefetch = 100\nconcurrency = 2",
        ..Default::default()
    };
    let p = Pipeline::start("sigterm", &[SHOP], options).await;
    let mut sent = HashSet::new();
    for i in 0..600 {
        sent.insert(p.post("shop", "chat", &chat(20_000 + i, json!({}))).await);
    }
    // Slow CoMagic, so batches are in flight when the signal comes.
    p.sandbox.add_fault(Fault { kind: FaultKind::Latency, latency_ms: 300, ..Default::default() });
    let mut first = start_deliver_binary(&p, 1);
    wait_for("deliveries under way", Duration::from_secs(30), || async {
        (p.sandbox.stored("shop", Upload::Chats).len() >= 50).then_some(())
    })
    .await;
    let signalled = Instant::now();
    let kill = std::process::Command::new("kill").args(["-TERM", &first.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(status) = first.try_wait().unwrap() {
            break status;
        }
        assert!(signalled.elapsed() < Duration::from_secs(35), "deliver did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    assert!(status.success(), "a clean exit: {status}");
    // Clean in the log too: nothing closed out of order (a channel closed by lapin on drop, racing
    // with the connection's close, logs a connection error).
    let log = std::fs::read_to_string(p.dir.path().join("deliver-1.log")).unwrap();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(r#""level":"ERROR""#)).collect();
    assert!(errors.is_empty(), "errors logged while stopping: {errors:?}");
    assert!(took < Duration::from_secs(30), "within the 30 s budget: {took:?}");
    let delivered_first = p.sandbox.stored("shop", Upload::Chats).len();
    assert!(delivered_first < 600, "stopped mid-work ({delivered_first} delivered)");

    p.sandbox.clear_faults();
    let mut second = start_deliver_binary(&p, 2);
    let stored = p.wait_stored("shop", Upload::Chats, 600, Duration::from_secs(60)).await;
    second.kill().unwrap();
    second.wait().unwrap();
    let ids = ext_ids(&stored);
    assert_eq!(ids.len(), 600);
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), sent);
    // What the first run had sent it also recorded and acked before exiting: nothing went twice.
    let repeats = p.sandbox.calls().iter().filter(|c| c.result == "duplicate_entity").count();
    // Reports asked by the second: messages it got redelivered (in doubt). The broker itself
    // returns a few it had on the way to the first when the consumer was cancelled.
    let asked = p.sandbox.calls().iter().filter(|c| c.method == "get.chats_report").count();
    println!("sigterm: {delivered_first} delivered before the signal, exit after {took:?}, {repeats} repeats, {asked} reports asked");
    assert_eq!(repeats, 0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_interleaved_are_acked_in_coalesced_frames_and_nothing_is_left_unacked() {
    let mut p = Pipeline::start("coalesce", &[SHOP, OTHER], Options::default()).await;
    for i in 0..150 {
        p.post("shop", "chat", &chat(30_000 + i, json!({}))).await;
        p.post("other", "chat", &chat(31_000 + i, json!({}))).await;
    }
    p.wait_stored("shop", Upload::Chats, 150, Duration::from_secs(60)).await;
    p.wait_stored("other", Upload::Chats, 150, Duration::from_secs(60)).await;
    let frames = |frame: &str| format!("bridge_deliver_ack_frames_total{{frame=\"{frame}\"}}");
    let coalesced = p.deliver_metric(&frames("ack_multiple")).await;
    let alone = p.deliver_metric(&frames("ack")).await;
    p.stop_deliver().await;
    // Anything left unacked would be back in the queue now that deliver's channel is closed.
    let left = p.broker.depth(&p.broker.topology.deliver_queue()).await;
    println!("coalesce: 300 events acked in {coalesced} multiple frames and {alone} single ones; {left} left");
    assert!(coalesced >= 1.0, "acks were coalesced");
    // Each tenant's batch holds every other message, so no batch's acks alone form a run.
    assert!((coalesced + alone) * 5.0 <= 300.0, "at least five events a frame");
    assert_eq!(left, 0, "every message was acked");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_unknown_and_poison_messages_are_dead_lettered_with_the_contract_headers() {
    let p = Pipeline::start("poison", &[SHOP], Options { external_deliver: true, ..Default::default() }).await;
    let deliver_queue = p.broker.topology.deliver_queue();
    // A real event that a consumer kept crashing on: handed back to the queue 9 times.
    let poison = p.post("shop", "chat", &chat(1, json!({}))).await;
    p.broker.bounce(&deliver_queue, 9).await;
    let publisher = p.broker.publisher().await;
    let events = p.broker.topology.events_exchange();
    publisher.publish(&events, "chat", b"{this is not json", FieldTable::default()).await.unwrap();
    let ghost = json!({
        "schema": 1, "event_id": "vb-ghost", "integration": "ghost", "kind": "offline",
        "received_at": chrono::Utc::now().to_rfc3339(), "payload": {"eventId": "newOfflineQuestion"},
    });
    publisher.publish(&events, "offline", ghost.to_string().as_bytes(), FieldTable::default()).await.unwrap();

    let mut deliver = start_deliver_binary(&p, 1);
    let dead_queue = p.broker.topology.dead_queue();
    wait_for("three dead letters", Duration::from_secs(30), || async {
        (p.broker.depth(&dead_queue).await == 3).then_some(())
    })
    .await;
    deliver.kill().unwrap();
    deliver.wait().unwrap();
    assert_eq!(p.broker.depth(&deliver_queue).await, 0, "nothing loops");
    assert!(p.sandbox.stored("shop", Upload::Chats).is_empty());

    let dead = p.broker.take_all(&dead_queue).await;
    let find = |needle: &str| {
        dead.iter()
            .find(|m| String::from_utf8_lossy(&m.body).contains(needle))
            .unwrap_or_else(|| panic!("a dead letter containing {needle}"))
    };
    let header = |m: &bridge_tests::broker::Received, key: &str| headers::get_str(&m.headers, key).unwrap_or_default();
    for m in &dead {
        assert!(m.persistent);
        assert!(chrono::DateTime::parse_from_rfc3339(&header(m, headers::DEAD_AT)).is_ok());
        assert!(headers::get_u64(&m.headers, headers::ATTEMPTS).is_some());
    }
    let p_letter = find(&poison);
    assert_eq!(header(p_letter, headers::ERROR_CLASS), "poison");
    assert!(header(p_letter, headers::ERROR).contains("delivered 10 times"), "{}", header(p_letter, headers::ERROR));
    assert_eq!(
        (header(p_letter, headers::INTEGRATION), header(p_letter, headers::KIND)),
        ("shop".into(), "chat".into())
    );
    let garbage = find("this is not json");
    assert_eq!(header(garbage, headers::ERROR_CLASS), "invalid_event");
    assert!(header(garbage, headers::ERROR).contains("not an event envelope"));
    assert_eq!(header(garbage, headers::KIND), "chat", "the routing key still tells the kind");
    let g = find("vb-ghost");
    assert_eq!(header(g, headers::ERROR_CLASS), "invalid_event");
    assert!(header(g, headers::ERROR).contains("no integration `ghost`"));
    assert_eq!((header(g, headers::INTEGRATION), header(g, headers::KIND)), ("ghost".into(), "offline".into()));
    p.stop().await;
}

/// An integration stored with settings deliver refuses and that was never good there: its events
/// wait in the retry queues, not among the dead letters (an unknown integration's fate), and reach
/// CoMagic once a save fixes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_integrations_events_wait_for_the_fix_and_are_then_delivered() {
    let p = Pipeline::start("refusedfix", &[SHOP, REFUSED], Options::default()).await;
    let envelope = json!({
        "schema": 1, "event_id": "vb-fresh-1", "integration": "fresh", "kind": "chat",
        "received_at": chrono::Utc::now().to_rfc3339(), "payload": chat(1, json!({})),
    });
    let events = p.broker.topology.events_exchange();
    let publisher = p.broker.publisher().await;
    publisher.publish(&events, "chat", envelope.to_string().as_bytes(), FieldTable::default()).await.unwrap();
    wait_for("the event to be parked", Duration::from_secs(20), || async {
        (p.deliver_metric("bridge_deliver_events_total{kind=\"chat\",outcome=\"retried\"}").await >= 1.0).then_some(())
    })
    .await;
    let dead_queue = p.broker.topology.dead_queue();
    assert_eq!(p.broker.depth(&dead_queue).await, 0, "not dead-lettered");

    let fixed = Tenant { id: "fresh", extra: "" };
    std::fs::write(p.dir.path().join("integrations.toml"), integrations_toml(p.sandbox.url(), &[SHOP, fixed])).unwrap();
    let stored = p.wait_stored("fresh", Upload::Chats, 1, Duration::from_secs(60)).await;
    assert_eq!(ext_ids(&stored), vec!["vb-fresh-1".to_owned()]);
    assert_eq!(p.broker.depth(&dead_queue).await, 0);
    p.stop().await;
}
