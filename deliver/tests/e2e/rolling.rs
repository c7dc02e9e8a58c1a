//! A rolling deploy of deliver under load: two replicas sharing the PostgreSQL ledger, each
//! replaced in turn (the new one started, then the old one sent SIGTERM, as Kubernetes does with
//! maxUnavailable 0). Deliveries never stop for more than 2 s, and each chat is stored once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_tests::fixtures::chat;
use bridge_tests::sandbox::Upload;
use bridge_tests::wait_for;
use serde_json::json;

use crate::helpers::{
    ext_ids, shared_ledger, start_deliver_binary, terminate, DeliverySampler, Options, Pipeline, Tenant,
};

const SHOP: Tenant = Tenant { id: "shop", extra: "" };
const CHATS: u64 = 3_000;
const PER_SECOND: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_both_replicas_under_load_stops_nothing_and_loses_nothing() {
    let ledger = shared_ledger();
    let options = Options { external_deliver: true, deliver_extra: ledger, linger_ms: 50, ..Default::default() };
    let p = Arc::new(Pipeline::start("rolling", &[SHOP], options).await);
    let mut replicas = vec![start_deliver_binary(&p, 1), start_deliver_binary(&p, 2)];

    let posted = Arc::new(AtomicU64::new(0));
    let load = {
        let (p, posted) = (p.clone(), posted.clone());
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / PER_SECOND as f64));
            let mut ids = HashSet::new();
            for i in 0..CHATS {
                pace.tick().await;
                ids.insert(p.post("shop", "chat", &chat(i, json!({}))).await);
                posted.fetch_add(1, Ordering::SeqCst);
            }
            ids
        })
    };
    let sampler = DeliverySampler::start(&p.sandbox, Duration::from_millis(50));
    let when_posted = |share: f64| {
        let posted = posted.clone();
        async move {
            let target = (CHATS as f64 * share) as u64;
            wait_for("the load to get there", Duration::from_secs(120), || async {
                (posted.load(Ordering::SeqCst) >= target).then_some(())
            })
            .await
        }
    };
    when_posted(0.2).await;
    let rolling_from = Instant::now();
    for (old, new_run) in [(0, 3), (1, 4)] {
        replicas.push(start_deliver_binary(&p, new_run));
        // The new replica is ready when it delivers; give it a moment in the rotation.
        when_posted(if old == 0 { 0.4 } else { 0.6 }).await;
        terminate(&mut replicas[old]);
    }
    let rolled_at = Instant::now();
    let posted_ids = load.await.unwrap();
    let stored = p.wait_stored("shop", Upload::Chats, posted_ids.len(), Duration::from_secs(60)).await;
    let longest_gap = sampler.longest_gap(rolling_from, rolled_at + Duration::from_secs(2)).await;
    for child in replicas.iter_mut().skip(2) {
        terminate(child);
    }

    let ids = ext_ids(&stored);
    let unique: HashSet<String> = ids.iter().cloned().collect();
    println!(
        "rolling restart: {} posted, {} stored, longest gap {:.2} s",
        posted_ids.len(),
        ids.len(),
        longest_gap.as_secs_f64()
    );
    assert_eq!(unique, posted_ids, "every chat stored");
    assert_eq!(ids.len(), unique.len(), "none stored twice");
    assert!(longest_gap <= Duration::from_secs(2), "deliveries stopped for {longest_gap:?}");
    Arc::into_inner(p).unwrap().stop().await;
}
