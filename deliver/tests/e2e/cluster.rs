//! The cluster fault drill: a 3-node RabbitMQ cluster (`scripts/cluster.sh`), two ingest and two
//! deliver replicas sharing the PostgreSQL ledger, the sandbox, and 20,000 webhooks of 20
//! integrations at a steady rate. Meanwhile the node leading the deliver queue is SIGKILLed and
//! started again later, one deliver replica is SIGKILLed and started again, one ingest replica is
//! stopped, and some webhooks are posted twice, to both ingest replicas. Afterwards every webhook
//! answered 200 is stored exactly once, and none is dead-lettered.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_tests::fixtures::chat;
use bridge_tests::wait_for;
use serde_json::json;

use crate::drill::{cluster, pipeline_on_cluster, post_one, settle, stored_chats, stored_twice, tenant_of};
use crate::helpers::{start_deliver_binary_with, terminate, DeliverySampler};
use crate::journeys::assert_journeys_end_once;

const WEBHOOKS: u64 = 20_000;
const PER_SECOND: u64 = 200;
const CLIENTS: u64 = 8;
/// Every this many webhooks, one is posted to both ingest replicas at once.
const TWICE_EVERY: u64 = 50;

/// What the load saw.
#[derive(Default)]
struct Tally {
    answered: Mutex<HashSet<String>>,
    other_answers: AtomicU64,
    posted: AtomicU64,
}

struct Ingests {
    first: String,
    second: String,
    second_up: AtomicBool,
}

/// One client: its share of the webhooks at its share of the rate, alternating replicas as a load
/// balancer would, and sending a request the stopped replica could not take to the other one.
async fn client(c: u64, http: reqwest::Client, ingests: Arc<Ingests>, tally: Arc<Tally>) {
    let mut pace = tokio::time::interval(Duration::from_secs_f64(CLIENTS as f64 / PER_SECOND as f64));
    for i in (c..WEBHOOKS).step_by(CLIENTS as usize) {
        pace.tick().await;
        let tenant = tenant_of(i);
        let body = chat(i, json!({}));
        let second_up = ingests.second_up.load(Ordering::SeqCst);
        let targets: Vec<&str> = match (i % TWICE_EVERY == 0, second_up, i % 2 == 1) {
            (true, true, _) => vec![&ingests.first, &ingests.second],
            (true, false, _) => vec![&ingests.first, &ingests.first],
            (false, true, true) => vec![&ingests.second],
            (false, _, _) => vec![&ingests.first],
        };
        let answers = futures_util::future::join_all(targets.iter().map(|address| {
            let (http, tenant, body, ingests) = (&http, &tenant, &body, &ingests);
            async move {
                match post_one(http, address, tenant, body).await {
                    Ok(answer) => answer,
                    // The replica is stopping: the request goes to the one that stays.
                    Err(_) if *address == ingests.second => {
                        post_one(http, &ingests.first, tenant, body).await.expect("the first ingest answers")
                    }
                    Err(error) => panic!("the first ingest does not answer: {error}"),
                }
            }
        }))
        .await;
        for (status, answer) in answers {
            if status == 200 {
                tally.answered.lock().unwrap().insert(answer["event_id"].as_str().unwrap().to_owned());
            } else {
                tally.other_answers.fetch_add(1, Ordering::SeqCst);
                eprintln!("webhook {i}: HTTP {status} {answer}");
            }
        }
        tally.posted.fetch_add(1, Ordering::SeqCst);
    }
}

async fn when_posted(tally: &Tally, share: f64) {
    let target = (WEBHOOKS as f64 * share) as u64;
    wait_for(&format!("{target} webhooks posted"), Duration::from_secs(600), || async {
        (tally.posted.load(Ordering::SeqCst) >= target).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local 3-node cluster (scripts/cluster.sh start): scripts/test.sh runs it alone"]
async fn a_node_a_deliver_and_an_ingest_lost_under_load_lose_nothing() {
    let (mut p, env) = pipeline_on_cluster("cluster").await;
    let mut delivers = [start_deliver_binary_with(&p, 1, &env), start_deliver_binary_with(&p, 2, &env)];
    let second = p.another_ingest(2).await;
    let ingests = Arc::new(Ingests {
        first: p.ingest_address().to_owned(),
        second: second.address().to_owned(),
        second_up: AtomicBool::new(true),
    });
    let tally = Arc::new(Tally::default());
    let load: Vec<_> =
        (0..CLIENTS).map(|c| tokio::spawn(client(c, p.http.clone(), ingests.clone(), tally.clone()))).collect();

    // Deliveries sampled every 100 ms, for the longest gap after the node is killed.
    let sampler = DeliverySampler::start(&p.sandbox, Duration::from_millis(100));

    when_posted(&tally, 0.25).await;
    let leader = cluster(&["leader", &p.broker.topology.deliver_queue()]);
    cluster(&["kill", &leader]);
    let killed_at = Instant::now();
    when_posted(&tally, 0.40).await;
    // SIGKILL mid-stream: its calls in flight may be stored without the ledger hearing of them;
    // those events come back in doubt, and CoMagic's report is asked before they are sent again.
    delivers[0].kill().unwrap();
    delivers[0].wait().unwrap();
    when_posted(&tally, 0.50).await;
    delivers[0] = start_deliver_binary_with(&p, 3, &env);
    when_posted(&tally, 0.60).await;
    ingests.second_up.store(false, Ordering::SeqCst);
    second.stop().await;
    when_posted(&tally, 0.75).await;
    cluster(&["start-node", &leader]);
    for c in load {
        c.await.unwrap();
    }
    let load_ended = Instant::now();

    let answered = tally.answered.lock().unwrap().clone();
    assert!(settle(&mut p, answered.len(), Duration::from_secs(420)).await, "everything settled within 7 minutes");
    let longest_gap = sampler.longest_gap(killed_at, load_ended).await;
    delivers.iter_mut().for_each(terminate);
    let t = p.broker.topology.clone();

    let stored = stored_chats(&p.sandbox);
    let twice = stored_twice(&stored).len();
    let missing = answered.iter().filter(|id| !stored.contains_key(*id)).count();
    let reports = p.sandbox.calls().iter().filter(|c| c.method == "get.chats_report").count();
    let dead = p.broker.depth(&t.dead_queue()).await;
    println!(
        "cluster drill: {} answered 200, {} stored, {twice} stored twice, {reports} reports asked, {missing} missing, {dead} dead-lettered, \
         longest gap in deliveries after the node kill {:.1} s, {} other answers",
        answered.len(),
        stored.len(),
        longest_gap.as_secs_f64(),
        tally.other_answers.load(Ordering::SeqCst)
    );
    assert_eq!(missing, 0, "every webhook answered 200 is stored");
    assert_eq!(twice, 0, "no webhook is stored twice");
    assert_eq!(dead, 0, "none is dead-lettered");
    assert_eq!(tally.other_answers.load(Ordering::SeqCst), 0, "every webhook was answered 200");
    // The ledger is PostgreSQL's: its journeys are read there, the replicas stopped.
    assert_journeys_end_once(&p.config, answered).await;
    p.stop().await;
}
